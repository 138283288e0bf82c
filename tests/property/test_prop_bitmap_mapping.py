"""Property tests for ``SectorBitmaps.runs`` (runs partition the requested sectors and match the
bits, VHDX-FORMAT.md 9) and ``mapping.merge`` (merging keeps what every byte maps to).

The sector bitmap lives in an in-memory file (``FileObjectSource`` over ``BytesIO``); the bits are
drawn as runs of random length so that long runs, single sectors and byte-straddling edges all
occur. The oracle is the bit array itself, unpacked LSB-first as the spec defines.
"""

from __future__ import annotations

import io

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from vhdx.constants import SECTOR_BITMAP_BLOCK_SIZE, MiB, SectorBitmapState
from vhdx.engine.bitmap import SectorBitmaps
from vhdx.engine.mapping import DATA, UNALLOCATED, ZERO, Extent, merge
from vhdx.engine.source import FileObjectSource
from vhdx.model.geometry import DiskGeometry
from vhdx.structs.bat import make_entry

BITMAP_AT = MiB  # file offset of the chunk's sector bitmap block in the fake file
# Noise for the rest of the chunk's bitmap: it must not leak into the runs of the block under test.
NOISE = np.random.default_rng(5).integers(0, 256, SECTOR_BITMAP_BLOCK_SIZE, dtype=np.uint8).tobytes()


@st.composite
def bitmap_case(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    sector = draw(st.sampled_from([512, 4096]))
    block = draw(st.sampled_from([MiB, 2 * MiB, 8 * MiB, 32 * MiB]))
    g = DiskGeometry(2 * SECTOR_BITMAP_BLOCK_SIZE * 8 * sector, block, sector)  # two full chunks
    chunk = draw(st.integers(0, 1))
    block_index = chunk * g.chunk_ratio + draw(st.integers(0, g.chunk_ratio - 1))
    spb = g.sectors_per_block
    # Bits as alternating runs with random lengths (a few long ones, many short ones).
    bits = np.zeros(spb, dtype=np.uint8)
    pos, value = 0, draw(st.integers(0, 1))
    lengths = draw(st.lists(st.one_of(st.integers(1, 9), st.integers(1, spb)), min_size=1, max_size=40))
    for n in lengths:
        bits[pos : pos + n] = value
        pos += n
        value ^= 1
        if pos >= spb:
            break
    first = draw(st.integers(0, spb))
    end = draw(st.integers(first, spb))
    return g, block_index, bits, first, end


def bitmaps_for(g: DiskGeometry, block_index: int, bits: np.ndarray, present: bool = True) -> SectorBitmaps:
    lo, hi = g.bitmap_byte_range(block_index)
    image = bytearray(BITMAP_AT) + NOISE
    image[BITMAP_AT + lo : BITMAP_AT + hi] = np.packbits(bits, bitorder="little").tobytes()
    chunk = g.chunk_of_block(block_index)
    entries = [0] * g.sector_bitmap_block_count
    if present:
        entries[chunk] = make_entry(SectorBitmapState.PRESENT, BITMAP_AT)
    source = FileObjectSource(io.BytesIO(bytes(image)), "<bitmap>", writable=False, closefd=False)
    return SectorBitmaps(source.readinto, g, entries.__getitem__)


@given(bitmap_case())
def test_runs_partition_the_range_and_match_the_bits(case) -> None:  # type: ignore[no-untyped-def]
    g, block_index, bits, first, end = case
    runs = bitmaps_for(g, block_index, bits).runs(block_index, first, end)
    if first == end:
        assert runs == []
        return
    assert runs[0][0] == first and runs[-1][1] == end
    for (s, e, present), nxt in zip(runs, runs[1:] + [None]):
        assert s < e
        assert np.all(bits[s:e] == int(present)), (s, e, present)
        if nxt is not None:
            assert nxt[0] == e  # contiguous
            assert nxt[2] != present  # maximal: neighbours differ
    # Read the other way round: every sector's run says what its bit says.
    assert sum(e - s for s, e, _ in runs) == end - first


@given(bitmap_case())
def test_bitmap_bits_follow_the_lsb_first_layout(case) -> None:  # type: ignore[no-untyped-def]
    g, block_index, bits, _, _ = case
    assert np.array_equal(bitmaps_for(g, block_index, bits).block_bits(block_index), bits)


@given(bitmap_case())
def test_absent_bitmap_block_means_nothing_is_here(case) -> None:  # type: ignore[no-untyped-def]
    g, block_index, bits, first, end = case
    runs = bitmaps_for(g, block_index, bits, present=False).runs(block_index, first, end)
    assert runs == ([] if first == end else [(first, end, False)])


@given(st.data())
def test_blocks_with_data_matches_the_per_block_bits(data: st.DataObject) -> None:
    """The bulk answer (one read per chunk) equals asking block by block, over several chunks,
    some without a bitmap block."""
    g = DiskGeometry(16 * 1024 * MiB, 256 * MiB, 512)  # chunk ratio 16: 4 chunks of 16 blocks
    assert g.sector_bitmap_block_count == 4
    per_block = g.sectors_per_block // 8
    chunks = g.sector_bitmap_block_count
    image = bytearray(BITMAP_AT + chunks * SECTOR_BITMAP_BLOCK_SIZE)
    entries = [0] * chunks
    for chunk in range(chunks):
        if not data.draw(st.booleans()):
            continue
        entries[chunk] = make_entry(SectorBitmapState.PRESENT, BITMAP_AT + chunk * SECTOR_BITMAP_BLOCK_SIZE)
        for j in data.draw(st.lists(st.integers(0, g.chunk_ratio - 1), max_size=8)):
            at = BITMAP_AT + chunk * SECTOR_BITMAP_BLOCK_SIZE + j * per_block + data.draw(st.integers(0, per_block - 1))
            image[at] = data.draw(st.integers(1, 255))
    source = FileObjectSource(io.BytesIO(bytes(image)), "<bitmap>", writable=False, closefd=False)
    bitmaps = SectorBitmaps(source.readinto, g, entries.__getitem__)
    blocks = np.array(data.draw(st.lists(st.integers(0, g.payload_block_count - 1), max_size=60)), dtype=np.int64)
    want = [bool(bitmaps.block_bits(int(b)).any()) for b in blocks]
    assert bitmaps.blocks_with_data(blocks).tolist() == want


# --- mapping.merge ---------------------------------------------------------------------------------


@st.composite
def extent_lists(draw: st.DrawFn) -> list[Extent]:
    """Contiguous extents from a random start; data extents sometimes continue the previous one in
    the file (so they may merge), states and depths vary; zero-length extents are sprinkled in."""
    pos = draw(st.integers(0, 1 << 40))
    out: list[Extent] = []
    file_pos = draw(st.integers(1, 1 << 30)) * 512
    for _ in range(draw(st.integers(0, 30))):
        length = draw(st.one_of(st.just(0), st.integers(1, 1 << 22)))
        state = draw(st.sampled_from([DATA, ZERO, UNALLOCATED]))
        depth = draw(st.integers(0, 2))
        if state == DATA:
            if not draw(st.booleans()):
                file_pos = draw(st.integers(1, 1 << 30)) * 512
            out.append(Extent(pos, length, DATA, file_pos, depth))
            file_pos += length
        else:
            out.append(Extent(pos, length, state, None, depth))
        pos += length
    return out


def answer(extents: list[Extent], offset: int) -> tuple[str, int | None, int]:
    """What byte ``offset`` maps to: state, file offset of that byte (data only), depth."""
    for e in extents:
        if e.virtual_offset <= offset < e.end:
            return e.state, (e.file_offset + offset - e.virtual_offset) if e.state == DATA else None, e.depth
    raise AssertionError(f"offset {offset} not covered")


@given(extent_lists(), st.data())
def test_merge_preserves_coverage_and_answers(extents: list[Extent], data: st.DataObject) -> None:
    merged = list(merge(extents))
    nonempty = [e for e in extents if e.length > 0]
    if not nonempty:
        assert merged == []
        return
    # Same span, contiguous, ordered, no empty extents, and never more pieces than before.
    assert merged[0].virtual_offset == nonempty[0].virtual_offset and merged[-1].end == nonempty[-1].end
    assert all(a.end == b.virtual_offset for a, b in zip(merged, merged[1:]))
    assert all(e.length > 0 for e in merged) and len(merged) <= len(nonempty)
    # Maximal: two neighbours are never answered the same contiguous way.
    for a, b in zip(merged, merged[1:]):
        same = a.state == b.state and a.depth == b.depth
        if a.state == DATA and same:
            same = a.file_offset is not None and a.file_offset + a.length == b.file_offset
        assert not same, (a, b)
    # Every input boundary and some drawn bytes map to the same answer before and after.
    points = {e.virtual_offset for e in nonempty} | {e.end - 1 for e in nonempty}
    points.add(data.draw(st.integers(nonempty[0].virtual_offset, nonempty[-1].end - 1), label="byte"))
    for p in points:
        assert answer(merged, p) == answer(nonempty, p)
