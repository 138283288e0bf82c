"""``vhdx.ops.check`` on many blocks: the scan keeps blocks as arrays (no Python object per block),
and only walks the blocks that overlap another one.

Oracles: for blocks laid out at random (payload and sector bitmap blocks, overlapping, at equal
offsets), the rule the check states in its findings, written here the plain way, one tuple per
block: in order of (file offset, sector bitmap blocks first, block number), a block that starts
before the block reaching furthest so far (among those not moved) ends overlaps it and is moved.
The relocation list, the listed findings and the summary count must be exactly those. Memory: a
per-block object costs hundreds of bytes a block (tracemalloc), the arrays tens.
"""

from __future__ import annotations

import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import vhdx
from vhdx.constants import BAT_ENTRY_SIZE, MiB, PayloadBlockState, SectorBitmapState
from vhdx.disk import open_engine
from vhdx.ops._check_scan import LIST_LIMIT, scan
from vhdx.ops.check import check


def layout(path: Path) -> tuple[object, int, np.ndarray, int]:
    engine = open_engine(path, require_parent=False)
    try:
        g = engine.geometry
        region = engine.image.region_table.bat
        bat = np.zeros(region.length // BAT_ENTRY_SIZE, dtype=np.uint64)
        bat[: len(engine.image.bat)] = engine.image.bat
        return g, region.file_offset, bat, -(-engine.image.file_size // MiB) * MiB
    finally:
        engine.close()


def write_bat(path: Path, bat_offset: int, bat: np.ndarray, file_size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(bat_offset)
        f.write(bat.astype("<u8").tobytes())
        f.truncate(file_size)


def reference_overlaps(blocks: list[tuple[int, bool, int, int]]) -> list[tuple[tuple[int, bool, int, int], tuple[int, bool, int, int]]]:
    """(block, the block it overlaps) for every block moved; blocks are (offset, payload, index, length)."""
    out = []
    owner = None
    owner_end = -1
    for b in sorted(blocks, key=lambda b: (b[0], b[1], b[2])):  # False (sector bitmap) first
        offset, _, _, length = b
        if owner is not None and offset < owner_end:
            out.append((b, owner))
            continue
        if offset + length > owner_end:
            owner, owner_end = b, offset + length
    return out


def name(b: tuple[int, bool, int, int]) -> str:
    return f"{'payload block' if b[1] else 'sector bitmap block'} {b[2]}"


@settings(max_examples=30, deadline=None)
@given(differencing=st.booleans(), big_blocks=st.booleans(), data=st.data())
def test_overlaps_follow_the_rule(differencing: bool, big_blocks: bool, data: st.DataObject) -> None:
    # 256 MiB blocks with 512-byte sectors: 16 blocks a chunk, so a differencing disk has several
    # sector bitmap blocks among its payload blocks.
    block_size = 256 * MiB if big_blocks else MiB
    count = data.draw(st.integers(2, 70), label="blocks")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.vhdx"
        vhdx.create(base, count * block_size, block_size=block_size).close()
        path = base
        if differencing:
            path = Path(tmp) / "child.vhdx"
            vhdx.create(path, parent=base, block_size=block_size).close()
        g, bat_offset, bat, start = layout(path)
        units = block_size // MiB
        # Offsets past every structure, in a range small enough for many to overlap.
        span = max(1, count * units * 2 // 3)
        places = st.lists(st.none() | st.integers(0, span), min_size=g.payload_block_count,
                          max_size=g.payload_block_count)
        blocks: list[tuple[int, bool, int, int]] = []
        for b, at in enumerate(data.draw(places, label="payload offsets (MiB past the structures)")):
            if at is not None:
                offset = start + at * MiB
                bat[g.payload_bat_index(b)] = offset | int(PayloadBlockState.FULLY_PRESENT)
                blocks.append((offset, True, b, block_size))
        if differencing:
            places = st.lists(st.integers(0, span), min_size=g.sector_bitmap_block_count,
                              max_size=g.sector_bitmap_block_count)
            for k, at in enumerate(data.draw(places, label="sector bitmap offsets")):
                offset = start + at * MiB
                bat[g.bitmap_bat_index(k)] = offset | int(SectorBitmapState.PRESENT)
                blocks.append((offset, False, k, MiB))
        end = max(o + n for o, _, _, n in blocks) if blocks else start
        write_bat(path, bat_offset, bat, end)

        s, _ = scan(str(path))

    expected = reference_overlaps(blocks)
    assert [(o.file_offset, o.kind == "payload", o.index, o.length) for o in s.relocate] == [b for b, _ in expected]
    texts = [f.message for f in s.findings if f.structure == "BAT" and (" overlap" in f.message or "both point" in f.message)]
    listed = []
    for b, owner in expected[:LIST_LIMIT]:
        if b[0] == owner[0]:
            listed.append(f"{name(b)} and {name(owner)} both point at file offset 0x{b[0]:x}")
        else:
            listed.append(f"{name(b)} at 0x{b[0]:x} overlaps {name(owner)} at 0x{owner[0]:x}")
    rest = len(expected) - LIST_LIMIT
    if rest > 0:
        listed.append(f"{rest} more blocks overlap other blocks")
    assert texts == listed
    # Nothing else is wrong with these images.
    assert [f.message for f in s.findings if f.severity == "corruption" and f.message not in listed] == []
    assert s.detach == {}


def test_memory_per_block(tmp_path: Path) -> None:
    """256 Ki blocks, all allocated (the file sparse): the check's peak allocations stay at tens
    of bytes a block, and its verdict is clean with every block counted."""
    count = 256 * 1024
    path = tmp_path / "many.vhdx"
    vhdx.create(path, count * MiB, block_size=MiB).close()
    g, bat_offset, bat, start = layout(path)
    offsets = start + np.arange(count, dtype=np.uint64) * np.uint64(MiB)
    bat[g.payload_bat_indices()] = offsets | np.uint64(int(PayloadBlockState.FULLY_PRESENT))
    write_bat(path, bat_offset, bat, int(offsets[-1]) + MiB)

    tracemalloc.start()
    try:
        report = check(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.exit_status == 0, [f.message for f in report.findings]
    assert report.allocated_clusters == count and report.fragmented_clusters == 0
    assert peak < 150 * count, f"{peak / count:.0f} bytes a block"
