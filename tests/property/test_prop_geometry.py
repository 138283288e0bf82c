"""Property tests for all index arithmetic of ``vhdx.model.geometry.DiskGeometry``.

Oracle: the BAT layout of VHDX-FORMAT.md 8.4 stated as invariants -- each chunk is ChunkRatio
payload slots followed by one sector bitmap slot; payload and bitmap indices never collide; the
only slots that are neither are the unused payload slots of a partial last chunk; a block's bitmap
bytes are the slice of its chunk's 1 MiB bitmap that holds its sectors' bits. The worked numbers
of 8.6 are checked exactly and also run through the properties as examples.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from vhdx.constants import (
    BAT_ENTRY_SIZE,
    MAX_BLOCK_SIZE,
    MAX_VIRTUAL_DISK_SIZE,
    MIN_BLOCK_SIZE,
    SECTOR_BITMAP_BLOCK_SIZE,
    SECTORS_PER_CHUNK,
    GiB,
    MiB,
    TiB,
)
from vhdx.model.geometry import DiskGeometry

BLOCK_SIZES = [MIN_BLOCK_SIZE << i for i in range((MAX_BLOCK_SIZE // MIN_BLOCK_SIZE).bit_length())]

# VHDX-FORMAT.md 8.6 "Worked numbers": (size, sector, block, CR, PB, BB, A dyn, A diff, B any, BAT region).
WORKED = [
    (127 * GiB, 512, 32 * MiB, 128, 4064, 32, 4095, 4128, 4096, 1 * MiB),
    (127 * GiB, 512, 2 * MiB, 2048, 65024, 32, 65055, 65568, 65056, 1 * MiB),
    (100 * GiB, 4096, 1 * MiB, 32768, 102400, 4, 102403, 131076, 102404, 2 * MiB),
    (10 * GiB, 512, 4 * MiB, 1024, 2560, 3, 2562, 3075, 2563, 1 * MiB),
    (64 * TiB, 512, 32 * MiB, 128, 2_097_152, 16_384, 2_113_535, 2_113_536, 2_113_536, 17 * MiB),
    (64 * TiB, 512, 1 * MiB, 4096, 67_108_864, 16_384, 67_125_247, 67_125_248, 67_125_248, 513 * MiB),
    (64 * TiB, 4096, 1 * MiB, 32768, 67_108_864, 2_048, 67_110_911, 67_110_912, 67_110_912, 513 * MiB),
    (64 * TiB, 4096, 256 * MiB, 128, 262_144, 2_048, 264_191, 264_192, 264_192, 3 * MiB),
]
WORKED_GEOMETRIES = [DiskGeometry(r[0], r[2], r[1]) for r in WORKED]


@pytest.mark.parametrize("row", WORKED, ids=[f"{r[0] // GiB}G-{r[1]}-{r[2] // MiB}M" for r in WORKED])
def test_worked_numbers(row: tuple[int, ...]) -> None:
    size, sector, block, ratio, pb, bb, a_dyn, a_diff, b_any, region = row
    g = DiskGeometry(size, block, sector)
    assert g.chunk_ratio == ratio
    assert g.payload_block_count == pb
    assert g.sector_bitmap_block_count == bb
    assert g.bat_entry_count == a_dyn
    assert g.bat_entry_count_full == a_diff
    assert g.payload_block_count + g.sector_bitmap_block_count == b_any  # formula B, for the record
    assert g.bat_region_length == region


@st.composite
def geometries(draw: st.DrawFn, max_size: int = MAX_VIRTUAL_DISK_SIZE) -> DiskGeometry:
    """Any valid geometry; sizes are often placed near block and chunk boundaries."""
    sector = draw(st.sampled_from([512, 4096]))
    block = draw(st.sampled_from(BLOCK_SIZES))
    max_sectors = max_size // sector
    chunk_sectors = SECTORS_PER_CHUNK
    block_sectors = block // sector
    near_chunk = st.builds(lambda k, d: k * chunk_sectors + d, st.integers(0, max_sectors // chunk_sectors),
                           st.integers(-2 * block_sectors, 2 * block_sectors))
    near_block = st.builds(lambda k, d: k * block_sectors + d, st.integers(0, max_sectors // block_sectors),
                           st.integers(-2, 2))
    sectors = draw(st.one_of(st.integers(0, max_sectors), near_chunk, near_block, st.integers(0, 4 * chunk_sectors)))
    return DiskGeometry(min(max(sectors, 0), max_sectors) * sector, block, sector)


def with_examples(test):  # type: ignore[no-untyped-def]
    for g in WORKED_GEOMETRIES:
        test = example(geometry=g, data=None)(test)
    return test


def draw_below(data: st.DataObject | None, bound: int, label: str) -> list[int]:
    """Edge values below ``bound`` plus one drawn value (only the edges for @example runs)."""
    values = {0, bound - 1, bound // 2} if bound > 0 else set()
    if data is not None and bound > 0:
        values.add(data.draw(st.integers(0, bound - 1), label=label))
    return sorted(v for v in values if 0 <= v < bound)


@with_examples
@given(geometry=geometries(), data=st.data())
def test_counts_and_interleave(geometry: DiskGeometry, data: st.DataObject | None) -> None:
    g = geometry
    cr, pb, bb = g.chunk_ratio, g.payload_block_count, g.sector_bitmap_block_count
    assert cr * g.block_size == SECTORS_PER_CHUNK * g.logical_sector_size == g.chunk_size
    assert (pb - 1) * g.block_size < g.virtual_size <= pb * g.block_size or pb == g.virtual_size == 0
    assert (bb - 1) * cr < pb <= bb * cr or bb == pb == 0
    if pb:
        # The last payload entry ends formula A (dynamic); the last chunk's SB entry ends the full BAT.
        assert g.payload_bat_index(pb - 1) + 1 == g.bat_entry_count
        assert g.bitmap_bat_index(bb - 1) + 1 == g.bat_entry_count_full
        # Between them lie exactly the unused payload slots of a partial last chunk.
        assert g.bat_entry_count_full - 1 - g.bat_entry_count == cr * bb - pb
    region = g.bat_region_length
    assert region % MiB == 0 and region >= MiB
    # Large enough for the full count, and the smallest such MiB multiple (never below 1 MiB).
    assert g.bat_entry_count_full * BAT_ENTRY_SIZE <= region
    assert region == MiB or region - MiB < g.bat_entry_count_full * BAT_ENTRY_SIZE

    for b in draw_below(data, pb, "block"):
        index = g.payload_bat_index(b)
        k = g.chunk_of_block(b)
        assert k == b // cr
        # Inside its chunk's run of slots, before the chunk's SB slot: never an SB slot.
        assert k * (cr + 1) <= index < g.bitmap_bat_index(k)
        assert index % (cr + 1) != cr
        assert index - k == b  # injective: distinct blocks get distinct slots
        assert index < g.bat_entry_count
    for k in draw_below(data, bb, "chunk"):
        index = g.bitmap_bat_index(k)
        assert index % (cr + 1) == cr
        assert index < g.bat_entry_count_full
        assert (index < g.bat_entry_count) == (k < bb - 1)


@with_examples
@given(geometry=geometries(), data=st.data())
def test_offsets_blocks_and_chunks(geometry: DiskGeometry, data: st.DataObject | None) -> None:
    g = geometry
    for offset in draw_below(data, g.virtual_size, "offset"):
        block = g.block_of(offset)
        start = block * g.block_size
        assert start <= offset < start + g.block_virtual_length(block)
        assert block < g.payload_block_count
        assert g.chunk_of_block(block) == offset // g.chunk_size
        # The sector's chunk (by sectors) is the block's chunk: chunks never split a block.
        assert (offset // g.logical_sector_size) // SECTORS_PER_CHUNK == g.chunk_of_block(block)
    pb = g.payload_block_count
    if pb:
        last = g.block_virtual_length(pb - 1)
        assert 0 < last <= g.block_size
        assert (pb - 1) * g.block_size + last == g.virtual_size
        assert g.block_virtual_length(pb) == 0
        for b in draw_below(data, pb - 1, "full block"):
            assert g.block_virtual_length(b) == g.block_size


@with_examples
@given(geometry=geometries(), data=st.data())
def test_bitmap_byte_range_holds_the_blocks_bits(geometry: DiskGeometry, data: st.DataObject | None) -> None:
    g = geometry
    spb = g.sectors_per_block
    per_block = spb // 8
    # A full chunk's blocks share the 1 MiB sector bitmap block exactly.
    assert g.chunk_ratio * per_block == SECTOR_BITMAP_BLOCK_SIZE
    for b in draw_below(data, g.payload_block_count, "block"):
        lo, hi = g.bitmap_byte_range(b)
        assert hi - lo == per_block
        assert 0 <= lo < hi <= SECTOR_BITMAP_BLOCK_SIZE
        for s in (0, spb - 1, spb // 2):  # first, last and a middle sector of the block
            bit = (b * spb + s) % SECTORS_PER_CHUNK  # VHDX-FORMAT.md 9: bit of sector s of the chunk
            assert lo <= bit >> 3 < hi
            assert (bit >> 3) - lo == s >> 3
        if (b + 1) % g.chunk_ratio:
            assert g.bitmap_byte_range(b + 1)[0] == hi  # neighbours in a chunk are adjacent
        else:
            assert g.bitmap_byte_range(b + 1)[0] == 0  # the next chunk starts its own bitmap


# Whole-array checks on geometries whose BAT stays small enough to enumerate.
SMALL_BAT = 300_000


@st.composite
def small_geometries(draw: st.DrawFn) -> DiskGeometry:
    g = draw(geometries(max_size=MAX_VIRTUAL_DISK_SIZE))
    if g.bat_entry_count_full > SMALL_BAT:
        sector, block = g.logical_sector_size, g.block_size
        max_sectors = (SMALL_BAT // (g.chunk_ratio + 1)) * g.chunk_ratio * (block // sector)
        g = DiskGeometry(draw(st.integers(0, max_sectors)) * sector, block, sector)
    return g


def small_examples(test):  # type: ignore[no-untyped-def]
    for g in WORKED_GEOMETRIES:
        if g.bat_entry_count_full <= SMALL_BAT:
            test = example(geometry=g)(test)
    return test


@small_examples
@given(geometry=small_geometries())
def test_payload_and_bitmap_indices_partition_the_bat(geometry: DiskGeometry) -> None:
    g = geometry
    payload = g.payload_bat_indices()
    bitmap = g.bitmap_bat_indices()
    assert payload.size == g.payload_block_count and bitmap.size == g.sector_bitmap_block_count
    assert np.all(np.diff(payload) > 0) and np.all(np.diff(bitmap) > 0)
    # The arrays agree with the scalar methods used by the engine.
    for b in {0, payload.size // 3, payload.size - 1} if payload.size else ():
        assert payload[b] == g.payload_bat_index(b)
    for k in {0, bitmap.size - 1} if bitmap.size else ():
        assert bitmap[k] == g.bitmap_bat_index(k)
    full = g.bat_entry_count_full
    unused = np.arange(g.bat_entry_count, max(g.bat_entry_count, full - 1))  # padding of a partial last chunk
    every = np.concatenate([payload, bitmap, unused])
    # Disjoint, and together exactly 0 .. bat_entry_count_full - 1.
    assert every.size == full
    assert np.array_equal(np.sort(every), np.arange(full))
    if g.payload_block_count % g.chunk_ratio == 0:
        assert unused.size == 0  # whole chunks: payload and bitmap slots cover the BAT by themselves
    assert np.all(payload < max(g.bat_entry_count, 1))


@given(geometry=small_geometries())
def test_block_lengths_add_up(geometry: DiskGeometry) -> None:
    g = geometry
    total = sum(g.block_virtual_length(b) for b in range(min(g.payload_block_count, 5000)))
    if g.payload_block_count <= 5000:
        assert total == g.virtual_size


@given(geometry=geometries().filter(lambda g: g.chunk_ratio <= 2048), data=st.data())
def test_bitmap_byte_ranges_partition_a_chunk(geometry: DiskGeometry, data: st.DataObject) -> None:
    g = geometry
    if g.sector_bitmap_block_count == 0:
        return
    k = data.draw(st.integers(0, g.sector_bitmap_block_count - 1), label="chunk")
    first = k * g.chunk_ratio
    blocks = range(first, min(first + g.chunk_ratio, g.payload_block_count))
    ranges = [g.bitmap_byte_range(b) for b in blocks]
    assert ranges[0][0] == 0
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    if len(ranges) == g.chunk_ratio:
        assert ranges[-1][1] == SECTOR_BITMAP_BLOCK_SIZE
    # The disk's last sector's bit lies in the last block's range.
    if k == g.sector_bitmap_block_count - 1 and g.virtual_size:
        last_bit = (g.virtual_size // g.logical_sector_size - 1) % SECTORS_PER_CHUNK
        assert ranges[-1][0] <= last_bit >> 3 < ranges[-1][1]
