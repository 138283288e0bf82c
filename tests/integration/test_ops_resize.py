"""vhdx.ops.resize: grow and shrink fixed and dynamic images in place.

Oracles: a bytearray model of every write made before the resize (the old content), hashed; after
the resize the old prefix must hash the same and the new range must read zero, checked by reading
(small disks) or through the allocation map plus reads of every stored range (huge disks).
Structure: our own ``check`` and, for 512-byte-sector images, ``qemu-img check``, ``qemu-img info``
(the virtual size), ``qemu-img compare`` against a raw file holding the model, and ``qemu-io``
writing into the new range (read back through us).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import uuid
from pathlib import Path

import numpy as np
import pytest
from craft import patch, qemu_image, read_bytes, read_layout, set_raw_bat_entry
from helpers import copy_to, expected_params, file_digest, image_of, require_tool, run

import vhdx
from vhdx.constants import (MAX_VIRTUAL_DISK_SIZE, REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE,
                             PayloadBlockState)
from vhdx.errors import UnsupportedError, VhdxError
from vhdx.model.geometry import DiskGeometry
from vhdx.ops import ResizeResult, check, resize
from vhdx.structs.bat import make_entry

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


# --- helpers -------------------------------------------------------------------------------------------
def make_image(path: Path, size: int, *, block_size: int, sector: int = 512, disk_type: str = "dynamic",
               pieces: int = 6, seed: int = 1, tail: bool = True) -> bytearray:
    """Create an image, write ``pieces`` random runs (and, with ``tail``, the last sector) and
    return the model of its virtual content."""
    rng = random.Random(seed)
    model = bytearray(size)
    with vhdx.create(path, size, block_size=block_size, logical_sector_size=sector, disk_type=disk_type) as d:
        writes = [(rng.randrange(0, size - 1), rng.randrange(1, 300 * KiB)) for _ in range(pieces)]
        if tail:
            writes.append((size - sector, sector))
        for offset, length in writes:
            length = min(length, size - offset)
            data = rng.randbytes(length)
            d.pwrite(offset, data)
            model[offset : offset + length] = data
    return model


def digest(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def is_zero(data: bytes) -> bool:
    return data == bytes(len(data))


def read_range(path: Path, offset: int, length: int) -> bytes:
    with vhdx.open(path) as d:
        return d.pread(offset, length)


def assert_new_range_zero(path: Path, start: int) -> None:
    """Everything from ``start`` to the end reads zero: no stored range there holds a non-zero
    byte, and a window right at ``start`` reads zero too. Stored ranges are checked in the file
    itself, skipping file system holes (which read as zero by definition), so that the new blocks
    of a huge fixed disk need not be read."""
    with vhdx.open(path) as d, open(path, "rb") as f:
        fd = f.fileno()
        for e in d.extents(start, d.size - start):
            if e.state != "data":
                continue
            for lo, hi in data_segments(fd, e.file_offset, e.file_offset + e.length):
                pos = lo
                while pos < hi:
                    n = min(8 * MiB, hi - pos)
                    assert is_zero(os.pread(fd, n, pos)), f"non-zero bytes in the new range (file offset 0x{pos:x})"
                    pos += n
        assert d.pread(start, min(MiB, d.size - start)) == bytes(min(MiB, d.size - start))
        # The stored ranges read the same through the disk (a short sample of each).
        for e in d.extents(start, d.size - start):
            if e.state == "data":
                assert d.pread(e.virtual_offset, min(e.length, 64 * KiB)) == bytes(min(e.length, 64 * KiB))


def data_segments(fd: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of [lo, hi) of the file that are not holes (SEEK_DATA/SEEK_HOLE)."""
    out = []
    pos = lo
    size = os.fstat(fd).st_size
    hi = min(hi, size)
    while pos < hi:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole up to the end of the file
            break
        if data >= hi:
            break
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), hi)
        out.append((data, hole))
        pos = hole
    return out


def assert_clean(path: Path, *, qemu: bool, size: int | None = None) -> None:
    report = check(path)
    assert report.exit_status == 0, [f.message for f in report.findings if f.severity != "info"]
    if qemu:
        require_tool("qemu-img")
        r = run("qemu-img", "check", "-f", "vhdx", str(path), check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        if size is not None:
            info = json.loads(run("qemu-img", "info", "-f", "vhdx", "--output=json", str(path)).stdout)
            assert info["virtual-size"] == size


def qemu_compare(path: Path, model: bytes | bytearray, folder: Path) -> None:
    """``qemu-img compare`` the image with a sparse raw file holding ``model`` (zeros past it)."""
    require_tool("qemu-img")
    raw = folder / "model.raw"
    with open(raw, "wb") as f:
        with vhdx.open(path) as d:
            f.truncate(d.size)
        arr = np.frombuffer(bytes(model), dtype=np.uint8)
        for pos in range(0, len(model), MiB):
            if arr[pos : pos + MiB].any():
                f.seek(pos)
                f.write(model[pos : pos + MiB])
    r = run("qemu-img", "compare", "-f", "raw", "-F", "vhdx", str(raw), str(path), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    raw.unlink()


# --- grow ---------------------------------------------------------------------------------------------
GROW_CASES = [
    # (sector, block size, old size, new size)
    (512, 1 * MiB, 5 * MiB + 512, 37 * MiB),
    (512, 2 * MiB, 9 * MiB, 300 * MiB),
    (512, 32 * MiB, 40 * MiB, 5 * GiB + 4 * KiB),
    (512, 256 * MiB, 300 * MiB, 1 * GiB),
    (4096, 1 * MiB, 6 * MiB + 4096, 70 * MiB),
    (4096, 4 * MiB, 10 * MiB, 64 * MiB),
    (4096, 256 * MiB, 260 * MiB, 40 * GiB),
]


@pytest.mark.parametrize("disk_type", ["dynamic", "fixed"])
@pytest.mark.parametrize("sector,block_size,old_size,new_size", GROW_CASES,
                         ids=[f"{c[0]}-{c[1] // MiB}M-{c[2]}-{c[3]}" for c in GROW_CASES])
def test_grow_keeps_content_and_new_range_reads_zero(tmp_path, disk_type, sector, block_size, old_size, new_size):
    path = tmp_path / "d.vhdx"
    model = make_image(path, old_size, block_size=block_size, sector=sector, disk_type=disk_type)
    before = digest(model)
    result = resize(path, new_size)
    assert isinstance(result, ResizeResult)
    assert (result.old_size, result.new_size, result.disk_type) == (old_size, new_size, disk_type)
    with vhdx.open(path) as d:
        assert d.size == new_size and d.disk_type == disk_type
        assert digest(d.pread(0, old_size)) == before
    assert_new_range_zero(path, old_size)
    old_blocks, new_blocks = -(-old_size // block_size), -(-new_size // block_size)
    layout = read_layout(path)
    states = [int(layout.bat[layout.geometry.payload_bat_index(b)]) & 7 for b in range(new_blocks)]
    if disk_type == "fixed":
        # The new blocks exist, FULLY_PRESENT, each inside the file.
        assert result.blocks_allocated == new_blocks - old_blocks
        assert all(s == PayloadBlockState.FULLY_PRESENT for s in states[old_blocks:])
        ends = [layout.block_file_offset(b) + block_size for b in range(new_blocks)]
        assert max(ends) <= result.file_size_after
    else:
        assert result.blocks_allocated == 0
        assert all(s == PayloadBlockState.NOT_PRESENT for s in states[old_blocks:])
    assert_clean(path, qemu=sector == 512, size=new_size)
    if sector == 512 and new_size <= 300 * MiB:
        qemu_compare(path, model, tmp_path)


def test_grow_relocates_the_bat_when_it_no_longer_fits(tmp_path):
    """64 MiB -> 200 GiB with 1 MiB blocks: the BAT needs 50 chunks x 4097 entries (1.6 MiB,
    VHDX-FORMAT.md 8.6), more than its 1 MiB region."""
    path = tmp_path / "d.vhdx"
    model = make_image(path, 64 * MiB, block_size=MiB, pieces=12)
    old_bat = read_layout(path).region_table.bat
    result = resize(path, 200 * GiB)
    assert result.bat_relocated
    assert result.bat_offset_before == old_bat.file_offset and result.bat_length_before == old_bat.length
    layout = read_layout(path)
    bat = layout.region_table.bat
    assert (result.bat_offset_after, result.bat_length_after) == (bat.file_offset, bat.length)
    assert bat.file_offset >= result.file_size_before  # fresh space at the end of the file
    assert bat.file_offset % MiB == 0 and bat.length % MiB == 0
    assert bat.length >= layout.geometry.bat_entry_count_full * 8
    # Both region tables agree (6.4), and the old BAT region now reads as zero (free space).
    assert read_bytes(path, REGION_TABLE_1_OFFSET, REGION_TABLE_SIZE) == read_bytes(path, REGION_TABLE_2_OFFSET,
                                                                                    REGION_TABLE_SIZE)
    assert is_zero(read_bytes(path, old_bat.file_offset, old_bat.length))
    assert digest(read_range(path, 0, 64 * MiB)) == digest(model)
    assert_new_range_zero(path, 64 * MiB)
    assert_clean(path, qemu=True, size=200 * GiB)
    # qemu writes into the new range; we read it back, and our own writes there work too.
    require_tool("qemu-io")
    run("qemu-io", "-f", "vhdx", "-c", f"write -P 0x5a {150 * GiB + 4096} 65536", str(path))
    with vhdx.open(path, "r+b") as d:
        assert d.pread(150 * GiB + 4096, 65536) == b"\x5a" * 65536
        assert d.pread(150 * GiB, 4096) == bytes(4096)
        d.pwrite(199 * GiB + 12345, b"ours")
    r = run("qemu-io", "-f", "vhdx", "-r", "-c", f"read -P 0x5a {150 * GiB + 4096} 65536", str(path))
    assert "Pattern verification failed" not in r.stdout
    assert read_range(path, 199 * GiB + 12345, 4) == b"ours"
    assert_clean(path, qemu=True, size=200 * GiB)
    # A second grow fits the room left to spare: no second relocation.
    again = resize(path, 300 * GiB)
    assert not again.bat_relocated and again.bat_offset_after == bat.file_offset
    assert digest(read_range(path, 0, 64 * MiB)) == digest(model)
    assert read_range(path, 150 * GiB + 4096, 65536) == b"\x5a" * 65536
    assert_clean(path, qemu=True, size=300 * GiB)


@pytest.mark.parametrize("sector,block_size", [(512, 32 * MiB), (4096, 256 * MiB)])
def test_grow_to_64_tib(tmp_path, sector, block_size):
    path = tmp_path / "d.vhdx"
    model = make_image(path, 100 * MiB, block_size=block_size, sector=sector)
    result = resize(path, MAX_VIRTUAL_DISK_SIZE)
    assert result.new_size == MAX_VIRTUAL_DISK_SIZE
    with vhdx.open(path) as d:
        assert d.size == 64 * TiB
        assert digest(d.pread(0, 100 * MiB)) == digest(model)
        assert d.pread(64 * TiB - MiB, MiB) == bytes(MiB)
    assert_new_range_zero(path, 100 * MiB)
    assert_clean(path, qemu=sector == 512, size=64 * TiB)
    with vhdx.open(path, "r+b") as d:
        d.pwrite(64 * TiB - 4096, b"\xee" * 4096)
    if sector == 512:
        require_tool("qemu-io")
        r = run("qemu-io", "-f", "vhdx", "-r", "-c", f"read -P 0xee {64 * TiB - 4096} 4096", str(path))
        assert "Pattern verification failed" not in r.stdout
        run("qemu-io", "-f", "vhdx", "-c", f"write -P 0x11 {64 * TiB - 8192} 4096", str(path))
        assert read_range(path, 64 * TiB - 8192, 4096) == b"\x11" * 4096
    assert_clean(path, qemu=sector == 512, size=64 * TiB)


def test_fixed_grow_too_big_for_one_log_entry_moves_the_bat(tmp_path):
    """A fixed image whose BAT region is large enough (it was 200 GiB once) but whose new entries
    would need more log sectors than the 1 MiB log holds: the BAT is rewritten at the end of the
    file and only the region tables and the size go through the log."""
    path = tmp_path / "f.vhdx"
    vhdx.create(path, 200 * GiB, block_size=MiB, disk_type="fixed").close()
    shrunk = resize(path, 4 * MiB, force=True)
    assert shrunk.blocks_freed == 200 * 1024 - 4
    assert shrunk.file_size_after < 16 * MiB  # the freed blocks were at the end: truncated
    with vhdx.open(path, "r+b") as d:
        d.pwrite(MiB - 3, b"abcdef")
    region = read_layout(path).region_table.bat
    assert region.length >= DiskGeometry(200 * GiB, MiB, 512).bat_entry_count_full * 8  # the BAT would fit
    grown = resize(path, 200 * GiB)
    assert grown.bat_relocated and grown.blocks_allocated == 200 * 1024 - 4
    assert read_range(path, MiB - 3, 6) == b"abcdef"
    assert read_range(path, 100 * GiB, MiB) == bytes(MiB)
    assert_clean(path, qemu=True, size=200 * GiB)


def test_shrink_and_grow_zero_the_bytes_past_the_end(tmp_path):
    """A forced shrink keeps the cut block whole and zeroes its bytes past the new end. Bytes
    there that are not zero (left by another tool) must not reappear when the disk grows again."""
    for disk_type in ("dynamic", "fixed"):
        path = tmp_path / f"{disk_type}.vhdx"
        with vhdx.create(path, 4 * MiB, block_size=MiB, disk_type=disk_type) as d:
            d.pwrite(0, b"\xaa" * (4 * MiB))
        shrunk = resize(path, 2 * MiB + MiB // 2, force=True)
        assert shrunk.bytes_written == MiB // 2
        block = read_layout(path).block_file_offset(2)
        assert is_zero(read_bytes(path, block + MiB // 2, MiB // 2))  # dropped data gone from the file
        patch(path, block + MiB // 2, b"\xbb" * (MiB // 2))  # as another tool's shrink would leave it
        result = resize(path, 4 * MiB)
        with vhdx.open(path) as d:
            assert d.pread(0, 2 * MiB + MiB // 2) == b"\xaa" * (2 * MiB + MiB // 2)
            assert d.pread(2 * MiB + MiB // 2, MiB + MiB // 2) == bytes(MiB + MiB // 2)
        assert result.bytes_written == MiB // 2
        assert_clean(path, qemu=True, size=4 * MiB)


def test_grow_does_not_trust_leftover_bat_entries(tmp_path):
    """Garbage in the BAT region past the last entry (left by some other writer) must not become
    part of the grown disk."""
    path = tmp_path / "d.vhdx"
    model = make_image(path, 8 * MiB, block_size=MiB, pieces=3)
    layout = read_layout(path)
    g = layout.geometry
    # Entries for future blocks 20 and 5000 (the second chunk) and the second chunk's SB slot, all
    # pointing at block 0's data.
    target = layout.block_file_offset(0) or 4 * MiB
    for index in (g.payload_bat_index(20), g.payload_bat_index(5000), g.bitmap_bat_index(1)):
        set_raw_bat_entry(path, layout.bat_offset + index * 8, make_entry(PayloadBlockState.FULLY_PRESENT, target))
    resize(path, 6 * GiB)
    assert digest(read_range(path, 0, 8 * MiB)) == digest(model)
    assert_new_range_zero(path, 8 * MiB)
    assert_clean(path, qemu=True, size=6 * GiB)


# --- shrink -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("disk_type", ["dynamic", "fixed"])
@pytest.mark.parametrize("sector", [512, 4096])
def test_shrink_is_refused_while_data_lies_past_the_new_end(tmp_path, disk_type, sector):
    path = tmp_path / "d.vhdx"
    with vhdx.create(path, 16 * MiB, block_size=MiB, logical_sector_size=sector, disk_type=disk_type) as d:
        d.pwrite(MiB, b"keep")
        d.pwrite(9 * MiB, bytes(MiB))  # stored zeros: nothing would be lost
        d.pwrite(11 * MiB + 777, b"x")
    before = file_digest(path)
    with pytest.raises(VhdxError) as info:
        resize(path, 8 * MiB)
    assert f"0x{11 * MiB + 777:x}" in str(info.value)
    assert file_digest(path) == before  # nothing was written
    # Down to just above the data: refused too; past it: fine.
    with pytest.raises(VhdxError, match=f"0x{11 * MiB + 777:x}"):
        resize(path, 11 * MiB + sector * (777 // sector))
    result = resize(path, 12 * MiB)
    assert result.new_size == 12 * MiB and result.blocks_freed == (4 if disk_type == "fixed" else 0)
    assert read_range(path, 11 * MiB + 777, 1) == b"x"
    assert_clean(path, qemu=sector == 512, size=12 * MiB)


@pytest.mark.parametrize("disk_type", ["dynamic", "fixed"])
@pytest.mark.parametrize("sector,block_size", [(512, 1 * MiB), (4096, 2 * MiB), (512, 32 * MiB)])
def test_forced_shrink_keeps_the_prefix_and_truncates(tmp_path, disk_type, sector, block_size):
    path = tmp_path / "d.vhdx"
    old_size = 3 * block_size + 5 * sector
    model = make_image(path, old_size, block_size=block_size, sector=sector, disk_type=disk_type, pieces=10)
    new_size = block_size + 7 * sector  # the second block is cut and keeps its storage
    file_before = path.stat().st_size
    result = resize(path, new_size, force=True)
    assert result.blocks_freed >= (2 if disk_type == "fixed" else 0)
    assert result.file_size_after <= file_before
    with vhdx.open(path) as d:
        assert d.size == new_size
        assert d.read() == bytes(model[:new_size])
    # Blocks are allocated in write order, so freed blocks may sit between kept ones: those are
    # leaks (interior space holding data) for compaction; trailing ones are gone.
    layout = read_layout(path)
    kept_end = max([layout.block_file_offset(b) + block_size for b in range(2) if layout.block_file_offset(b)] +
                   [layout.bat_offset + layout.bat_length, layout.metadata_offset + layout.metadata_length])
    if result.blocks_freed:
        assert path.stat().st_size == kept_end
    report = check(path)
    assert report.corruptions == 0 and not report.check_errors
    if sector == 512:
        r = run("qemu-img", "check", "-f", "vhdx", str(path), check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        qemu_compare(path, model[:new_size], tmp_path)
    # Growing back: the dropped range reads zero.
    resize(path, old_size)
    with vhdx.open(path) as d:
        assert d.read() == bytes(model[:new_size]) + bytes(old_size - new_size)


def test_shrink_dynamic_with_trailing_blocks_is_clean(tmp_path):
    """Blocks written in order: the ones past the new end are the last in the file, so the
    truncation reclaims all of them and the check finds no leak."""
    path = tmp_path / "d.vhdx"
    with vhdx.create(path, 16 * MiB, block_size=MiB) as d:
        for b in range(16):
            d.pwrite(b * MiB, bytes([b + 1]) * MiB)
    size_before = path.stat().st_size
    result = resize(path, 6 * MiB, force=True)
    assert result.blocks_freed == 10
    assert result.file_size_after == size_before - 10 * MiB == path.stat().st_size
    assert_clean(path, qemu=True, size=6 * MiB)
    with vhdx.open(path) as d:
        assert d.read() == b"".join(bytes([b + 1]) * MiB for b in range(6))


# --- refusals and no-ops --------------------------------------------------------------------------------
def test_differencing_images_are_refused(tmp_path):
    parent = tmp_path / "parent.vhdx"
    child = tmp_path / "child.avhdx"
    with vhdx.create(parent, 8 * MiB, block_size=MiB) as d:
        d.pwrite(0, b"p" * 100)
    with vhdx.create(child, parent=parent) as d:
        d.pwrite(MiB, b"c" * 100)
    before = file_digest(child), file_digest(parent)
    with pytest.raises(UnsupportedError, match="differencing"):
        resize(child, 16 * MiB)
    # Also when the parent cannot be found: the refusal does not need it.
    parent.rename(tmp_path / "elsewhere.vhdx")
    with pytest.raises(UnsupportedError, match="differencing"):
        resize(child, 16 * MiB)
    assert file_digest(child) == before[0]


@pytest.mark.parametrize("size,match", [(0, "positive"), (-512, "positive"), (64 * TiB + 512, "64 TiB"),
                                        (8 * MiB + 100, "multiple of the 512-byte"), (8 * MiB + 512, "4096-byte")])
def test_bad_sizes_are_refused_without_writing(tmp_path, size, match):
    path = tmp_path / "d.vhdx"
    sector = 4096 if "4096" in match else 512
    vhdx.create(path, 8 * MiB, logical_sector_size=sector).close()
    before = file_digest(path)
    with pytest.raises(ValueError, match=match):
        resize(path, size)
    assert file_digest(path) == before


def test_same_size_writes_nothing(tmp_path):
    path = tmp_path / "d.vhdx"
    make_image(path, 8 * MiB, block_size=MiB)
    before = file_digest(path)
    result = resize(path, 8 * MiB)
    assert (result.old_size, result.new_size, result.bat_relocated) == (8 * MiB, 8 * MiB, False)
    assert file_digest(path) == before


def test_resize_changes_data_write_guid_and_leaves_the_log_empty(tmp_path):
    path = tmp_path / "d.vhdx"
    make_image(path, 8 * MiB, block_size=MiB)
    with vhdx.open(path) as d:
        guid = d.info().data_write_guid
    resize(path, 16 * MiB)
    with vhdx.open(path) as d:
        info = d.info()
    assert uuid.UUID(str(info.data_write_guid)) != uuid.UUID(str(guid))
    assert info.log_state == "empty"


def test_progress_is_reported(tmp_path):
    path = tmp_path / "d.vhdx"
    make_image(path, 64 * MiB, block_size=MiB)
    seen = []
    resize(path, 200 * GiB, progress=seen.append)
    assert seen and all(p.operation == "resize" and p.unit == "bytes" for p in seen)
    assert seen[0].done == 0 and seen[-1].total and seen[-1].done == seen[-1].total
    # A shrink reports the range examined for data first, then the BAT.
    seen.clear()
    with vhdx.open(path, "r+b") as d:
        d.pwrite(100 * MiB, b"x")
    with pytest.raises(VhdxError):
        resize(path, 64 * MiB, progress=seen.append)
    assert seen and seen[0].total == 200 * GiB - 64 * MiB


# --- images made by qemu-img ---------------------------------------------------------------------------
@pytest.mark.parametrize("subformat,block_state_zero", [("dynamic", False), ("dynamic", True), ("fixed", False),
                                                        ("fixed", True)])
def test_qemu_made_images(tmp_path, subformat, block_state_zero):
    writes = [(0, 65536, 0x11), (3 * MiB + 100, 5000, 0x22), (10 * MiB - 4096, 4096, 0x33)]
    path = qemu_image(tmp_path, size=10 * MiB, block_size=4 * MiB, subformat=subformat,
                      block_state_zero=block_state_zero, writes=writes)
    model = bytearray(10 * MiB)
    for offset, length, byte in writes:
        model[offset : offset + length] = bytes([byte]) * length
    # Grow past a partial last block (QEMU's fixed images end inside it), then well beyond.
    resize(path, 13 * MiB)
    assert read_range(path, 0, 10 * MiB) == bytes(model)
    assert_new_range_zero(path, 10 * MiB)
    assert_clean(path, qemu=True, size=13 * MiB)
    qemu_compare(path, model, tmp_path)
    # Dynamic: 600 GiB is 150 chunks of 1025 entries, more than QEMU's 1 MiB BAT region holds.
    big = 600 * GiB if subformat == "dynamic" else 129 * GiB
    result = resize(path, big)
    assert result.bat_relocated == (subformat == "dynamic")
    assert_clean(path, qemu=True, size=big)
    assert read_range(path, 0, 10 * MiB) == bytes(model)
    run("qemu-io", "-f", "vhdx", "-c", f"write -P 0x44 {100 * GiB} 8192", str(path))
    assert read_range(path, 100 * GiB, 8192) == b"\x44" * 8192
    # Shrink back below the data: refused; with force the prefix stays.
    with pytest.raises(VhdxError, match=f"0x{10 * MiB - 4096:x}"):  # the first data past 5 MiB
        resize(path, 5 * MiB)
    resize(path, 5 * MiB, force=True)
    assert read_range(path, 0, 5 * MiB) == bytes(model[: 5 * MiB])
    r = run("qemu-img", "check", "-f", "vhdx", str(path), check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    qemu_compare(path, model[: 5 * MiB], tmp_path)


# --- images made by Windows and other writers (shared fixtures) -----------------------------------------
FOREIGN = ("qemu-iotests/test-disk2vhd", "dissect.hypervisor/dynamic.vhdx", "dissect.hypervisor/fixed.vhdx",
           "velociraptor/test", "coreos-hyperv/config2_base")


@pytest.mark.parametrize("entry", expected_params(lambda e: e.id in FOREIGN))
def test_images_made_by_other_writers(tmp_path, entry):
    """Windows (Hyper-V API) and Disk2VHD images: grown in place, grown until the BAT must move
    (2**18 blocks: a 2 MiB BAT), shrunk back; the original content (its recorded SHA-256)
    survives every step."""
    path = copy_to(image_of(entry), tmp_path)
    size = entry.virtual_size

    def prefix_digest() -> str:
        with vhdx.open(path) as d:
            h = hashlib.sha256()
            for pos in range(0, size, 8 * MiB):
                h.update(d.pread(pos, min(8 * MiB, size - pos)))
            return h.hexdigest()

    assert prefix_digest() == entry.raw_sha256
    resize(path, size + 3 * GiB + 512)
    assert prefix_digest() == entry.raw_sha256
    assert_new_range_zero(path, size)
    assert_clean(path, qemu=True, size=size + 3 * GiB + 512)
    huge = min(MAX_VIRTUAL_DISK_SIZE, entry.block_size << 18)
    grown = resize(path, huge)
    assert grown.bat_relocated
    assert prefix_digest() == entry.raw_sha256
    assert_clean(path, qemu=True, size=huge)
    resize(path, size)
    assert prefix_digest() == entry.raw_sha256
    assert_clean(path, qemu=True, size=size)


def test_a_failed_fixed_grow_changes_nothing_visible(tmp_path, monkeypatch):
    """The file system refuses to extend the file (a fixed grow past its largest file): the error
    names the image, the disk is unchanged and its DataWriteGuid too (children stay linked)."""
    path = tmp_path / "f.vhdx"
    model = make_image(path, 8 * MiB, block_size=MiB, disk_type="fixed")
    with vhdx.open(path) as d:
        guid = d.info().data_write_guid
    from vhdx.engine import source as source_module

    def refuse(self, size):
        raise OSError(27, "File too large")

    monkeypatch.setattr(source_module.FileSource, "truncate", refuse)
    with pytest.raises(OSError, match="File too large .*fixed image") as info:
        resize(path, 100 * GiB)
    assert info.value.filename == str(path)
    monkeypatch.undo()
    with vhdx.open(path) as d:
        assert d.size == 8 * MiB and d.read() == bytes(model)
        info2 = d.info()
    assert info2.data_write_guid == guid and info2.log_state == "empty"
    assert_clean(path, qemu=True, size=8 * MiB)
