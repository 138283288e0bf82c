"""vhdx.ops.compact: release all-zero and trimmed blocks, move the rest down, truncate, in place.

Oracles: the virtual disk's sha256 taken before the operation (through us, and through the whole
chain for differencing images), ``qemu-img compare`` against a copy taken before and ``qemu-img
check`` (qemu reads dynamic images with 512-byte sectors only), our own ``check`` (no corruption,
no leak: every hole below the new end was filled), the headers (DataWriteGuid unchanged, log
empty), the BAT read back with the model layer (which blocks still have storage), and the file
bytes themselves for the runs that must not change anything.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from craft import patch, qemu_image, read_layout, set_bat_entry, unchanged
from helpers import require_tool, run

import vhdx
from vhdx.constants import BAT_STATE_MASK, PayloadBlockState, SectorBitmapState
from vhdx.disk import open_engine
from vhdx.errors import ReadOnlyError, UnsupportedError, VhdxError
from vhdx.ops import CompactResult, Progress, check, compact

MiB = 1 << 20
# The module itself (vhdx.ops exports the function under the same name).
compact_module = importlib.import_module("vhdx.ops.compact")


def digest(path: Path, **kwargs: object) -> str:
    with vhdx.open(path, **kwargs) as disk:  # type: ignore[arg-type]
        h = hashlib.sha256()
        while chunk := disk.read(8 * MiB):
            h.update(chunk)
        return h.hexdigest()


def header_info(path: Path, **kwargs: object) -> vhdx.DiskInfo:
    with vhdx.open(path, **kwargs) as disk:  # type: ignore[arg-type]
        return disk.info()


def states(path: Path) -> list[int]:
    layout = read_layout(path)
    g = layout.geometry
    return [int(layout.bat[g.payload_bat_index(b)]) & BAT_STATE_MASK for b in range(g.payload_block_count)]


def offsets(path: Path) -> list[int]:
    layout = read_layout(path)
    return [layout.block_file_offset(b) for b in range(layout.geometry.payload_block_count)]


def fill(disk: vhdx.VirtualDisk, rng: np.random.Generator, block: int, *, zero: bool = False,
         length: int | None = None) -> None:
    n = disk.block_size if length is None else length
    disk.pwrite(block * disk.block_size, bytes(n) if zero else rng.bytes(n))


def make_dynamic(path: Path, *, block_size: int, sector: int, blocks: int = 24, seed: int = 1) -> dict[str, list[int]]:
    """A dynamic image with data blocks, allocated all-zero blocks (whole and a block written with
    zeros in pieces), blocks with only their last sector set, trimmed (leaked) and zeroed blocks,
    written in an order that scatters them through the file. Returns which block is which."""
    rng = np.random.default_rng(seed)
    kinds: dict[str, list[int]] = {"data": [], "zero": [], "trimmed": [], "zeroed": [], "tail": []}
    with vhdx.create(path, blocks * block_size, block_size=block_size, logical_sector_size=sector) as disk:
        order = rng.permutation(blocks).tolist()
        for i, b in enumerate(order):
            kind = ("data", "zero", "data", "trimmed", "data", "zeroed", "tail", "data")[i % 8]
            kinds[kind].append(b)
            if kind == "zero":
                fill(disk, rng, b, zero=True)
            elif kind == "tail":
                disk.pwrite((b + 1) * block_size - sector, b"\x01" * sector)  # data only in the last sector
            else:
                fill(disk, rng, b, length=block_size // 2 if i % 3 else None)
        for b in kinds["trimmed"]:
            disk.discard(b * block_size, block_size)
        for b in kinds["zeroed"]:
            disk.write_zeroes(b * block_size, block_size)
    return kinds


def assert_clean(path: Path, **kwargs: object) -> None:
    report = check(path, **kwargs)  # type: ignore[arg-type]
    assert report.corruptions == 0 and report.leaks == 0, report.findings
    assert header_info(path, **kwargs).log_state == "empty"


# --- dynamic images ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sector", [512, 4096])
@pytest.mark.parametrize("block_size", [1 * MiB, 2 * MiB, 8 * MiB])
def test_dynamic(tmp_path: Path, sector: int, block_size: int) -> None:
    path = tmp_path / "d.vhdx"
    kinds = make_dynamic(path, block_size=block_size, sector=sector)
    before_copy = tmp_path / "before.vhdx"
    shutil.copyfile(path, before_copy)
    before = digest(path)
    guid = header_info(path).data_write_guid
    size_before = os.path.getsize(path)
    progress: list[Progress] = []

    result = compact(path, progress=progress.append)

    assert isinstance(result, CompactResult)
    assert digest(path) == before
    assert header_info(path).data_write_guid == guid  # nothing visible changed (MS-VHDX 5.4)
    assert_clean(path)
    # The all-zero blocks lost their storage (NOT_PRESENT in a dynamic disk); the data blocks and
    # the blocks with one non-zero sector kept theirs.
    st = states(path)
    for b in kinds["zero"]:
        assert st[b] == PayloadBlockState.NOT_PRESENT
    for b in kinds["data"] + kinds["tail"]:
        assert st[b] == PayloadBlockState.FULLY_PRESENT
    # Every hole was filled: the file ends right after its last block.
    kept = len(kinds["data"]) + len(kinds["tail"])
    layout = read_layout(path)
    structures_end = max(e.end for e in layout.region_table.entries)
    assert os.path.getsize(path) == max(structures_end, max(offsets(path)) + block_size)
    assert os.path.getsize(path) <= structures_end + kept * block_size
    assert result.file_size_before == size_before
    assert result.file_size_after == os.path.getsize(path) < size_before
    assert result.bytes_reclaimed == size_before - result.file_size_after
    assert result.blocks_freed == len(kinds["zero"])  # trimmed and zeroed blocks had no offset left
    assert result.blocks_moved > 0 and result.bytes_written == result.blocks_moved * block_size
    assert progress and all(p.operation == "compact" for p in progress)
    assert progress[-1].done == progress[-1].total
    if sector == 512:
        require_tool("qemu-img")
        run("qemu-img", "check", "-f", "vhdx", str(path))
        run("qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", str(before_copy), str(path))

    # Idempotent: a second run finds nothing to do and leaves the file byte-identical.
    with unchanged(path):
        again = compact(path)
    assert (again.blocks_freed, again.blocks_moved, again.bytes_reclaimed, again.bytes_written) == (0, 0, 0, 0)


def test_no_zero_scan_frees_only_what_has_no_data(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    kinds = make_dynamic(path, block_size=MiB, sector=512)
    before = digest(path)
    result = compact(path, scan_zeros=False)
    assert digest(path) == before
    assert result.bytes_read == result.bytes_written  # only the moves read anything
    st = states(path)
    for b in kinds["zero"]:
        assert st[b] == PayloadBlockState.FULLY_PRESENT  # not scanned: kept
    # A later full compaction still frees them.
    result = compact(path)
    assert result.blocks_freed == len(kinds["zero"])
    assert digest(path) == before


def test_nothing_to_do_leaves_file_identical(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    rng = np.random.default_rng(3)
    with vhdx.create(path, 8 * MiB, block_size=MiB) as disk:
        for b in (0, 1, 2, 5):
            fill(disk, rng, b)
    with unchanged(path):
        result = compact(path)
    assert (result.blocks_freed, result.blocks_moved, result.bytes_reclaimed) == (0, 0, 0)
    empty = tmp_path / "empty.vhdx"
    vhdx.create(empty, 64 * MiB).close()
    with unchanged(empty):
        compact(empty)


def test_only_trailing_space_is_truncated(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    rng = np.random.default_rng(4)
    with vhdx.create(path, 8 * MiB, block_size=MiB) as disk:
        fill(disk, rng, 0)
    before = digest(path)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:  # unreferenced data after the last block (a writer died)
        f.seek(size)
        f.write(b"\xee" * (3 * MiB + 100))
    result = compact(path)
    assert os.path.getsize(path) == size
    assert result.bytes_reclaimed == 3 * MiB + 100
    assert digest(path) == before
    assert_clean(path)


def test_multiple_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compact_module, "MOVE_BATCH", 2 * MiB)
    path = tmp_path / "d.vhdx"
    make_dynamic(path, block_size=MiB, sector=512, blocks=40)
    before = digest(path)
    result = compact(path)
    assert result.blocks_moved > 2
    assert digest(path) == before
    assert_clean(path)


def test_stale_offsets_of_storageless_blocks_are_cleared(tmp_path: Path) -> None:
    """ZERO/UNMAPPED entries that still carry a FileOffsetMB (other writers leave them): the state
    stays, the offset goes (VHDX-FORMAT.md 8.2), and the space is reclaimed."""
    path = tmp_path / "d.vhdx"
    rng = np.random.default_rng(5)
    with vhdx.create(path, 8 * MiB, block_size=MiB) as disk:
        for b in range(6):
            fill(disk, rng, b)
    layout = read_layout(path)
    for block, state in ((1, PayloadBlockState.ZERO), (2, PayloadBlockState.UNMAPPED),
                         (3, PayloadBlockState.UNDEFINED)):
        set_bat_entry(path, layout.payload_entry_offset(block), state, layout.block_file_offset(block))
    before = digest(path)
    result = compact(path)
    assert result.blocks_freed == 3
    assert digest(path) == before
    st, off = states(path), offsets(path)
    assert st[1:4] == [PayloadBlockState.ZERO, PayloadBlockState.UNMAPPED, PayloadBlockState.UNDEFINED]
    assert off[1:4] == [0, 0, 0]
    assert_clean(path)


# --- images made by qemu ---------------------------------------------------------------------------
@pytest.mark.parametrize("block_state_zero", [False, True])
def test_qemu_made_image(tmp_path: Path, block_state_zero: bool) -> None:
    require_tool("qemu-img", "qemu-io")
    path = qemu_image(tmp_path, "q.vhdx", 32 * MiB, block_size=MiB, block_state_zero=block_state_zero,
                      writes=[(0, 3 * MiB, 0x5A), (5 * MiB, MiB + 4096, 0x11), (9 * MiB, 2 * MiB, 0x22),
                              (20 * MiB, MiB, 0x33), (30 * MiB, 2 * MiB, 0x44)])
    # Zeros written over data and over nothing (qemu allocates blocks for them), and a discard.
    run("qemu-io", "-f", "vhdx", "-c", "write -z 9M 2M", "-c", "write -P 0 14M 2M", "-c", "write -z 1M 1M",
        "-c", "discard 20M 1M", str(path))
    before_copy = tmp_path / "before.vhdx"
    shutil.copyfile(path, before_copy)
    before = digest(path)
    size = os.path.getsize(path)
    result = compact(path)
    assert digest(path) == before
    assert os.path.getsize(path) < size
    assert result.blocks_freed >= 2
    run("qemu-img", "check", "-f", "vhdx", str(path))
    run("qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", str(before_copy), str(path))
    assert_clean(path)
    with unchanged(path):
        compact(path)


# --- differencing images ------------------------------------------------------------------------------
def make_chain(tmp_path: Path, sector: int = 512) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    parent = tmp_path / "parent.vhdx"
    with vhdx.create(parent, 16 * MiB, block_size=2 * MiB, logical_sector_size=sector) as p:
        p.pwrite(0, rng.bytes(16 * MiB))  # the parent shows through wherever the child has nothing
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=parent, block_size=MiB) as c:
        c.pwrite(0, rng.bytes(4096))  # block 0: partially present
        c.pwrite(3 * MiB + 8192, rng.bytes(8192))  # block 3: partially present (bits cleared below)
        c.pwrite(5 * MiB, bytes(MiB))  # block 5: written whole with zeros -> hides the parent
        c.pwrite(6 * MiB, rng.bytes(MiB))  # block 6: data
        c.pwrite(8 * MiB, rng.bytes(MiB))  # block 8: data, trimmed below (a leak)
        c.pwrite(10 * MiB, bytes(MiB))  # block 10: zeros, hides the parent
        c.pwrite(12 * MiB, rng.bytes(MiB // 2))  # block 12: partially present
        c.discard(8 * MiB, MiB)
    return parent, child


def clear_bits(path: Path, block: int) -> None:
    """Clear block's bits in its chunk's sector bitmap (the block then reads only from the parent)."""
    layout = read_layout(path)
    g = layout.geometry
    sb = int(layout.bat[g.bitmap_bat_index(g.chunk_of_block(block))]) & ~BAT_STATE_MASK
    lo, hi = g.bitmap_byte_range(block)
    patch(path, sb + lo, bytes(hi - lo))


@pytest.mark.parametrize("sector", [512, 4096])
def test_differencing_child(tmp_path: Path, sector: int) -> None:
    parent, child = make_chain(tmp_path, sector)
    clear_bits(child, 3)
    grandchild = tmp_path / "grandchild.avhdx"
    with vhdx.create(grandchild, parent=child) as gc:
        gc.pwrite(7 * MiB, b"g" * 10000)
    before = digest(child)
    before_gc = digest(grandchild)
    guid = header_info(child).data_write_guid
    size = os.path.getsize(child)
    with unchanged(parent):
        result = compact(child)
    assert result.disk_type == "differencing"
    assert digest(child) == before
    assert header_info(child).data_write_guid == guid
    assert header_info(child).parent_link_ok
    assert digest(grandchild) == before_gc  # the grandchild's link to the child still holds
    st = states(child)
    assert st[5] == st[10] == PayloadBlockState.ZERO  # zeros that keep hiding the parent
    assert st[3] == PayloadBlockState.NOT_PRESENT  # no sector of it was in the child
    assert st[0] == st[12] == PayloadBlockState.PARTIALLY_PRESENT
    assert st[6] == PayloadBlockState.FULLY_PRESENT
    assert result.blocks_freed == 3  # 3 (no bits), 5, 10
    assert os.path.getsize(child) < size
    assert_clean(child)
    with unchanged(child, parent):
        compact(child)


def test_differencing_unused_sector_bitmap_is_released(tmp_path: Path) -> None:
    parent, child = make_chain(tmp_path)
    for block in (0, 3, 12):
        clear_bits(child, block)
    before = digest(child)
    result = compact(child)
    assert digest(child) == before
    assert result.sector_bitmap_blocks_freed == 1
    layout = read_layout(child)
    assert int(layout.bat[layout.geometry.bitmap_bat_index(0)]) == SectorBitmapState.NOT_PRESENT
    assert states(child)[0] == PayloadBlockState.NOT_PRESENT
    assert_clean(child)


def test_differencing_sector_bitmap_moves(tmp_path: Path) -> None:
    """A sector bitmap block at the end of the file moves down like a payload block."""
    rng = np.random.default_rng(9)
    parent = tmp_path / "parent.vhdx"
    with vhdx.create(parent, 16 * MiB, block_size=2 * MiB) as p:
        p.pwrite(0, rng.bytes(16 * MiB))
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=parent, block_size=MiB) as c:
        c.pwrite(9 * MiB + 512, rng.bytes(1024))  # partial: a sector bitmap block, then block 9
        for b in (1, 2, 3):
            c.pwrite(b * MiB, rng.bytes(MiB))
    # Move the bitmap block to the end of the file by hand (a layout other writers produce).
    layout = read_layout(child)
    entry_offset = layout.bitmap_entry_offset(0)
    sb_old = int(layout.bat[layout.geometry.bitmap_bat_index(0)]) & ~BAT_STATE_MASK
    sb_before = os.path.getsize(child)
    with open(child, "r+b") as f:
        f.seek(sb_old)
        bits = f.read(MiB)
        f.seek(sb_before)
        f.write(bits)
    set_bat_entry(child, entry_offset, SectorBitmapState.PRESENT, sb_before)
    before = digest(child)
    result = compact(child)
    assert digest(child) == before
    assert result.sector_bitmap_blocks_moved == 1
    layout = read_layout(child)
    sb_after = int(layout.bat[layout.geometry.bitmap_bat_index(0)]) & ~BAT_STATE_MASK
    assert 0 < sb_after < sb_before
    assert_clean(child)


def test_compacted_parent_keeps_children_linked(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    parent = tmp_path / "base.vhdx"
    with vhdx.create(parent, 16 * MiB, block_size=MiB) as p:
        for b in range(16):
            fill(p, rng, b, zero=b % 3 == 0)
        p.discard(4 * MiB, 2 * MiB)
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=parent) as c:
        c.pwrite(MiB, b"c" * 5000)
    before = digest(child)
    with unchanged(child):
        result = compact(parent)
    assert result.blocks_freed > 0 and result.bytes_reclaimed > 0
    assert header_info(child).parent_link_ok
    assert digest(child) == before


# --- refusals -------------------------------------------------------------------------------------------
def test_fixed_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.vhdx"
    with vhdx.create(path, 8 * MiB, disk_type="fixed", block_size=MiB) as disk:
        disk.pwrite(0, b"x" * 1000)
    with unchanged(path), pytest.raises(UnsupportedError, match="convert --type dynamic"):
        compact(path)


def test_fixed_converted_when_asked(tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    path = tmp_path / "f.vhdx"
    with vhdx.create(path, 16 * MiB, disk_type="fixed", block_size=MiB) as disk:
        for b in (1, 4, 9):
            fill(disk, rng, b)
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=path) as c:
        c.pwrite(2 * MiB, b"c" * 4096)
    before, before_child = digest(path), digest(child)
    info = header_info(path)
    result = compact(path, convert_fixed=True)
    assert result.converted
    after = header_info(path)
    assert after.disk_type == "dynamic"
    assert (after.disk_id, after.data_write_guid) == (info.disk_id, info.data_write_guid)
    assert after.allocated_blocks == 3
    assert digest(path) == before
    assert digest(child) == before_child and header_info(child).parent_link_ok
    assert result.file_size_after < result.file_size_before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    assert_clean(path)


def test_read_only_file_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    make_dynamic(path, block_size=MiB, sector=512)
    with unchanged(path), open(path, "rb") as f, pytest.raises(ReadOnlyError):
        compact(f)


def test_read_only_file_is_refused(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions (the read-only file object case covers the refusal)")
    path = tmp_path / "d.vhdx"
    make_dynamic(path, block_size=MiB, sector=512)
    path.chmod(0o444)
    with unchanged(path), pytest.raises(PermissionError):
        compact(path)


def test_locked_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    make_dynamic(path, block_size=MiB, sector=512)
    engine = open_engine(path, writable=True)
    try:
        with unchanged(path), pytest.raises(VhdxError, match="already open for writing"):
            compact(path)
    finally:
        engine.close()


def test_file_object(tmp_path: Path) -> None:
    path = tmp_path / "d.vhdx"
    make_dynamic(path, block_size=MiB, sector=512)
    data = path.read_bytes()
    before = digest(path)
    buf = io.BytesIO(data)
    result = compact(buf)
    assert len(buf.getvalue()) == result.file_size_after < len(data)
    assert digest(buf) == before  # type: ignore[arg-type]
    assert not buf.closed


def test_differencing_without_parent_is_refused(tmp_path: Path) -> None:
    parent, child = make_chain(tmp_path)
    before = digest(child)
    moved = tmp_path / "elsewhere.vhdx"
    parent.rename(moved)
    with unchanged(child), pytest.raises(VhdxError, match="parent"):
        compact(child)
    result = compact(child, parent=moved)  # the parent given explicitly
    assert result.blocks_freed > 0
    assert digest(child, parent=moved) == before



@pytest.mark.parametrize("through_file_object", [False, True])
def test_last_block_cut_short_by_the_file_end(tmp_path: Path, through_file_object: bool) -> None:
    """A block that passes the end of the file (its tail reads as zeros, VHDX-FORMAT.md 8.7)
    moves with that tail written as zeros, by the kernel copy and by the buffered one alike."""
    path = tmp_path / "d.vhdx"
    rng = np.random.default_rng(13)
    with vhdx.create(path, 8 * MiB, block_size=MiB) as disk:
        for b in range(4):
            fill(disk, rng, b)
        disk.discard(MiB, MiB)
    last = max(offsets(path))
    os.truncate(path, last + MiB // 2)
    before = digest(path)
    if through_file_object:
        buf = io.BytesIO(path.read_bytes())  # no descriptor: the buffered copy
        result = compact(buf)
        path.write_bytes(buf.getvalue())
    else:
        result = compact(path)
    assert result.blocks_moved == 1
    assert digest(path) == before
    assert_clean(path)
