"""Property tests for the allocation map (``BlockEngine.extents`` and ``VirtualDisk.extents``) on
the shared real and QEMU-made images.

Invariants: extents tile the requested range exactly, in order, without empty pieces; merged
extents are ``mapping.merge`` of the engine's; and reading each extent agrees with its state --
``zero``/``unallocated`` read zeros, ``data`` reads the bytes stored in the file of chain layer
``depth`` at ``file_offset`` (read here with plain file I/O, independently of the library).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vhdx
from helpers import SharedFixture, fixture_path, image_of, load_expected
from vhdx.engine.mapping import DATA, UNALLOCATED, ZERO, Extent, merge

MAX_IMAGE = 80 * 1024 * 1024  # keep decompression and the run light
WINDOW = 64 * 1024  # bytes compared at each end of an extent


def _images() -> list[SharedFixture]:
    try:
        entries = load_expected()
    except pytest.skip.Exception:
        return []
    # Children without their parent have no content to check.
    return [e for e in entries if e.image_size <= MAX_IMAGE and e.raw_sha256 is not None]


IMAGES = _images()


@contextlib.contextmanager
def opened(entry: SharedFixture) -> Iterator[vhdx.VirtualDisk]:
    kwargs = {}
    if entry.raw.get("parent_file"):
        kwargs["parent"] = fixture_path(entry.parent_file, Path(entry.parent_file).name.rsplit(".", 1)[0])
    with vhdx.open(image_of(entry), **kwargs) as disk:
        yield disk


def file_bytes(path: str, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    return data + bytes(length - len(data))  # a partial last block reads as zeros past EOF


def check_read(disk: vhdx.VirtualDisk, e: Extent, lo: int, hi: int) -> None:
    """Compare virtual bytes [lo, hi) of extent ``e`` with what its state says they are."""
    got = disk.pread(lo, hi - lo)
    assert len(got) == hi - lo
    if e.state in (ZERO, UNALLOCATED):
        assert e.file_offset is None
        assert got == bytes(hi - lo), f"{e} is {e.state} but reads non-zero at 0x{lo:x}"
    else:
        assert e.state == DATA and e.file_offset is not None
        layer = disk.chain[e.depth]
        expected = file_bytes(layer.name, e.file_offset + (lo - e.virtual_offset), hi - lo)
        assert got == expected, f"{e} differs from {layer.name} at virtual 0x{lo:x}"


def assert_tiles(extents: list[Extent], start: int, end: int) -> None:
    if start >= end:
        assert extents == []
        return
    assert extents[0].virtual_offset == start
    assert extents[-1].end == end
    for a, b in zip(extents, extents[1:]):
        assert a.end == b.virtual_offset
    assert all(e.length > 0 for e in extents)
    assert all(e.state in (DATA, ZERO, UNALLOCATED) for e in extents)


@pytest.mark.parametrize("entry", IMAGES, ids=[e.id for e in IMAGES])
def test_extents_tile_the_disk_and_match_the_data(entry: SharedFixture) -> None:
    with opened(entry) as disk:
        assert disk.size == entry.virtual_size
        engine_extents = list(disk._engine.extents())
        assert_tiles(engine_extents, 0, disk.size)
        merged = list(disk.extents())
        assert merged == list(merge(engine_extents))
        assert_tiles(merged, 0, disk.size)
        for e in merged:
            check_read(disk, e, e.virtual_offset, min(e.end, e.virtual_offset + WINDOW))
            check_read(disk, e, max(e.virtual_offset, e.end - WINDOW), e.end)
        # Without the parent, the child's own layer still tiles; the rest is "not here".
        top = list(disk.extents(include_parent=False))
        assert_tiles(top, 0, disk.size)
        for e in top:
            assert e.depth == 0 or (e.state == UNALLOCATED and e.file_offset is None)
        assert sum(e.length for e in top if e.state == DATA) == sum(
            e.length for e in merged if e.state == DATA and e.depth == 0)


@pytest.mark.parametrize("entry", IMAGES, ids=[e.id for e in IMAGES])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_extents_of_any_window(entry: SharedFixture, data: st.DataObject) -> None:
    with opened(entry) as disk:
        size = disk.size
        offset = data.draw(st.one_of(st.integers(0, size), st.integers(0, size // 512).map(lambda s: s * 512)),
                           label="offset")
        length = data.draw(st.one_of(st.integers(0, 4 * 1024 * 1024), st.integers(0, size)), label="length")
        end = min(size, offset + length)
        raw = list(disk._engine.extents(offset, length))
        assert_tiles(raw, offset, end)
        merged = list(disk.extents(offset, length))
        assert_tiles(merged, offset, end)
        if merged:
            e = data.draw(st.sampled_from(merged), label="extent")
            lo = data.draw(st.integers(e.virtual_offset, e.end - 1), label="lo")
            hi = data.draw(st.integers(lo + 1, min(e.end, lo + 8192)), label="hi")
            check_read(disk, e, lo, hi)
