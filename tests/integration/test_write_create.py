"""vhdx.create(): parameter validation, Hyper-V defaults, differencing children, fixed images and
the file layout.

Oracles: VHDX-FORMAT.md (sections 1.3, 3, 7, 8.4-8.6 and 11) applied to the bytes on disk as
decoded by ``rawvhdx`` -- a decoder written for the tests from the spec, sharing no code with the
library -- and the parent's own header for the differencing link.
"""

from __future__ import annotations

import ntpath
import os
import uuid
from pathlib import Path

import pytest
from helpers import file_digest
from rawvhdx import (
    BAT_GUID,
    FILE_PARAMETERS,
    FULLY_PRESENT,
    LOGICAL_SECTOR,
    METADATA_GUID,
    PARENT_LOCATOR,
    PHYSICAL_SECTOR,
    VHDX_LOCATOR_TYPE,
    VIRTUAL_DISK_ID,
    VIRTUAL_DISK_SIZE,
    read_headers,
    read_image,
)

import vhdx

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    """Files in ``folder`` other than ``keep`` (create's temporary files must never survive)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# --- validation ------------------------------------------------------------------------------------

INVALID = [
    pytest.param(dict(size=0), "size", id="size-zero"),
    pytest.param(dict(size=-512), "size", id="size-negative"),
    pytest.param(dict(size=MiB + 1), "multiple of the logical sector size", id="size-not-sector-multiple"),
    pytest.param(dict(size=MiB + 512, logical_sector_size=4096), "multiple of the logical sector size",
                 id="size-not-4k-sector-multiple"),
    pytest.param(dict(size=64 * TiB + 512), "64 TiB", id="size-over-64TiB"),
    pytest.param(dict(size=128 * TiB), "64 TiB", id="size-128TiB"),
    pytest.param(dict(size=None), "size", id="size-missing"),
    pytest.param(dict(size=GiB, block_size=3 * MiB), "block size", id="block-not-power-of-two"),
    pytest.param(dict(size=GiB, block_size=MiB + 4096), "block size", id="block-odd"),
    pytest.param(dict(size=GiB, block_size=MiB // 2), "block size", id="block-512KiB"),
    pytest.param(dict(size=GiB, block_size=4096), "block size", id="block-4KiB"),
    pytest.param(dict(size=GiB, block_size=0), "block size", id="block-zero"),
    pytest.param(dict(size=GiB, block_size=-MiB), "block size", id="block-negative"),
    pytest.param(dict(size=GiB, block_size=512 * MiB), "block size", id="block-512MiB"),
    pytest.param(dict(size=GiB, logical_sector_size=1024), "logical sector size", id="logical-1024"),
    pytest.param(dict(size=GiB, logical_sector_size=0), "logical sector size", id="logical-0"),
    pytest.param(dict(size=GiB, physical_sector_size=2048), "physical sector size", id="physical-2048"),
    pytest.param(dict(size=GiB, physical_sector_size=8192), "physical sector size", id="physical-8192"),
    pytest.param(dict(size=GiB, log_size=0), "log size", id="log-zero"),
    pytest.param(dict(size=GiB, log_size=MiB + 4096), "log size", id="log-not-MiB-multiple"),
    pytest.param(dict(size=GiB, log_size=-MiB), "log size", id="log-negative"),
    # LogLength is a u32 (VHDX-FORMAT.md 5.1): 4 GiB cannot be stored.
    pytest.param(dict(size=GiB, log_size=4 * GiB), "log size", id="log-4GiB"),
    pytest.param(dict(size=GiB, disk_type="differencing"), "parent", id="differencing-without-parent"),
    pytest.param(dict(size=GiB, disk_type="sparse"), "disk type", id="unknown-type"),
]


@pytest.mark.parametrize(("kwargs", "mentions"), INVALID)
def test_invalid_parameter_is_a_value_error_and_leaves_nothing(tmp_path: Path, kwargs: dict, mentions: str) -> None:
    target = tmp_path / "new.vhdx"
    with pytest.raises(ValueError, match=mentions):
        vhdx.create(target, **kwargs)
    assert _leftovers(tmp_path, set()) == []


@pytest.mark.parametrize("disk_type", ["fixed", "dynamic"])
def test_parent_with_a_non_differencing_type_is_refused(tmp_path: Path, disk_type: str) -> None:
    parent = tmp_path / "parent.vhdx"
    vhdx.create(parent, 8 * MiB, block_size=MiB).close()
    before = file_digest(parent)
    with pytest.raises(ValueError, match="differencing"):
        vhdx.create(tmp_path / "child.vhdx", disk_type=disk_type, parent=parent)
    assert _leftovers(tmp_path, {"parent.vhdx"}) == []
    assert file_digest(parent) == before


def test_differencing_size_other_than_the_parents_is_refused(tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhdx"
    vhdx.create(parent, 8 * MiB, block_size=MiB).close()
    with pytest.raises(ValueError, match="parent's size"):
        vhdx.create(tmp_path / "child.vhdx", 16 * MiB, parent=parent)
    assert _leftovers(tmp_path, {"parent.vhdx"}) == []


def test_largest_valid_parameters_are_accepted(tmp_path: Path) -> None:
    """The limits themselves are valid: 64 TiB, 256 MiB blocks, 4096-byte sectors."""
    with vhdx.create(tmp_path / "max.vhdx", 64 * TiB, block_size=256 * MiB, logical_sector_size=4096,
                     physical_sector_size=4096) as disk:
        assert (disk.size, disk.block_size, disk.logical_sector_size) == (64 * TiB, 256 * MiB, 4096)
    with vhdx.create(tmp_path / "min.vhdx", 512, block_size=MiB, physical_sector_size=512) as disk:
        assert (disk.size, disk.block_size, disk.physical_sector_size) == (512, MiB, 512)


# --- existing files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("disk_type", ["dynamic", "fixed", "differencing"])
def test_existing_file_is_never_overwritten(tmp_path: Path, disk_type: str) -> None:
    parent = tmp_path / "parent.vhdx"
    vhdx.create(parent, 8 * MiB, block_size=MiB).close()
    target = tmp_path / "taken.vhdx"
    target.write_bytes(b"precious data\n" * 1000)
    stat = target.stat()
    digest = file_digest(target)
    kwargs = dict(parent=parent) if disk_type == "differencing" else dict(size=8 * MiB, disk_type=disk_type)
    with pytest.raises(FileExistsError):
        vhdx.create(target, **kwargs)
    after = target.stat()
    assert file_digest(target) == digest
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    assert _leftovers(tmp_path, {"parent.vhdx", "taken.vhdx"}) == []
    # overwrite=True replaces it with a valid image.
    with vhdx.create(target, overwrite=True, **kwargs) as disk:
        assert disk.disk_type == disk_type
    assert read_image(target).virtual_size == 8 * MiB
    assert _leftovers(tmp_path, {"parent.vhdx", "taken.vhdx"}) == []


def test_dangling_symlink_counts_as_existing(tmp_path: Path) -> None:
    """The target name is taken even if it points nowhere: creating through it would write
    somewhere the caller did not name."""
    link = tmp_path / "link.vhdx"
    link.symlink_to(tmp_path / "nowhere.vhdx")
    with pytest.raises(FileExistsError):
        vhdx.create(link, MiB)
    assert link.is_symlink() and not (tmp_path / "nowhere.vhdx").exists()


def test_invalid_parameters_leave_an_existing_file_alone_even_with_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "taken.vhdx"
    target.write_bytes(b"x" * 4096)
    digest = file_digest(target)
    with pytest.raises(ValueError):
        vhdx.create(target, 1000, overwrite=True)
    assert file_digest(target) == digest


# --- defaults --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("disk_type", "block_size"), [("dynamic", 32 * MiB), ("fixed", 32 * MiB)])
def test_hyper_v_defaults(tmp_path: Path, disk_type: str, block_size: int) -> None:
    path = tmp_path / "d.vhdx"
    with vhdx.create(path, 64 * MiB, disk_type=disk_type) as disk:
        assert disk.block_size == block_size
        assert (disk.logical_sector_size, disk.physical_sector_size) == (512, 4096)
    img = read_image(path)
    assert (img.block_size, img.logical_sector_size, img.physical_sector_size) == (block_size, 512, 4096)
    assert img.current.log_length == MiB
    assert img.leave_block_allocated is (disk_type == "fixed")
    assert not img.has_parent


def test_default_type_is_dynamic(tmp_path: Path) -> None:
    with vhdx.create(tmp_path / "d.vhdx", 64 * MiB) as disk:
        assert disk.disk_type == "dynamic"
    img = read_image(tmp_path / "d.vhdx")
    assert not img.leave_block_allocated and not img.has_parent


@pytest.mark.parametrize("parent_block", [MiB, 32 * MiB, 256 * MiB])
def test_differencing_default_block_size_is_2MiB_whatever_the_parent(tmp_path: Path, parent_block: int) -> None:
    parent = tmp_path / "parent.vhdx"
    vhdx.create(parent, 512 * MiB, block_size=parent_block).close()
    with vhdx.create(tmp_path / "child.vhdx", parent=parent) as child:
        assert child.disk_type == "differencing"
        assert child.block_size == 2 * MiB
    assert read_image(tmp_path / "child.vhdx").block_size == 2 * MiB


# --- differencing children ------------------------------------------------------------------------------


@pytest.mark.parametrize(("logical", "physical"), [(512, 4096), (4096, 4096), (512, 512)])
def test_child_takes_size_sectors_and_id_from_its_parent(tmp_path: Path, logical: int, physical: int) -> None:
    parent = tmp_path / "parent.vhdx"
    size = 40 * MiB + 8 * logical  # not a block multiple: the size must be copied exactly
    vhdx.create(parent, size, block_size=4 * MiB, logical_sector_size=logical,
                physical_sector_size=physical).close()
    parent_digest = file_digest(parent)
    p = read_image(parent)
    # The caller's sector sizes are ignored for a child (a child MUST match its parent).
    with vhdx.create(tmp_path / "child.vhdx", parent=parent, logical_sector_size=512 if logical == 4096 else 4096,
                     physical_sector_size=512 if physical == 4096 else 4096) as child:
        assert (child.size, child.logical_sector_size, child.physical_sector_size) == (size, logical, physical)
        assert child.disk_id == p.disk_id
        assert child.parent is not None and child.parent.size == size
    c = read_image(tmp_path / "child.vhdx")
    assert (c.virtual_size, c.logical_sector_size, c.physical_sector_size, c.disk_id) == (
        p.virtual_size, p.logical_sector_size, p.physical_sector_size, p.disk_id)
    assert c.has_parent and not c.leave_block_allocated
    assert file_digest(parent) == parent_digest, "creating a child must not modify its parent"


def test_child_locator_links_to_the_parents_data_write_guid(tmp_path: Path) -> None:
    parent = tmp_path / "base.vhdx"
    with vhdx.create(parent, 16 * MiB, block_size=MiB) as p:
        p.pwrite(0, b"parent data")  # a written parent has a DataWriteGuid made in that session
    parent_guid = read_image(parent).current.data_write_guid
    vhdx.create(tmp_path / "child.avhdx", parent=parent).close()
    c = read_image(tmp_path / "child.avhdx")
    assert c.locator_type == VHDX_LOCATOR_TYPE
    assert c.locator is not None
    linkage = c.locator["parent_linkage"]
    assert linkage == "{" + str(parent_guid) + "}"  # braced, lowercase text (VHDX-FORMAT.md 7.6)
    assert linkage == linkage.lower()
    # Hyper-V writes parent_linkage2 as the zero GUID when unused.
    assert uuid.UUID(c.locator.get("parent_linkage2", "{00000000-0000-0000-0000-000000000000}")).int == 0
    assert c.locator["relative_path"] == ".\\base.vhdx"
    absolute = c.locator["absolute_win32_path"]
    assert "/" not in absolute and ntpath.basename(absolute) == "base.vhdx"
    if os.sep == "/":
        assert absolute.replace("\\", "/") == str(parent.resolve())
    else:
        assert absolute == str(parent.resolve())


@pytest.mark.parametrize(
    ("parent_rel", "child_rel", "expected"),
    [
        ("base.vhdx", "child.vhdx", ".\\base.vhdx"),
        ("base.vhdx", "kids/child.vhdx", "..\\base.vhdx"),
        ("bases/deep/base.vhdx", "child.vhdx", ".\\bases\\deep\\base.vhdx"),
        ("a/base.vhdx", "b/c/child.vhdx", "..\\..\\a\\base.vhdx"),
    ],
)
def test_relative_path_is_relative_to_the_childs_folder(tmp_path: Path, parent_rel: str, child_rel: str,
                                                      expected: str) -> None:
    parent, child = tmp_path / parent_rel, tmp_path / child_rel
    parent.parent.mkdir(parents=True, exist_ok=True)
    child.parent.mkdir(parents=True, exist_ok=True)
    vhdx.create(parent, 4 * MiB, block_size=MiB).close()
    vhdx.create(child, parent=parent).close()
    locator = read_image(child).locator
    assert locator is not None and locator["relative_path"] == expected
    # The recorded path finds the parent, even after the whole tree moves elsewhere.
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    tmp_path.rename(moved)
    try:
        with vhdx.open(moved / child_rel) as disk:
            assert disk.parent is not None
            assert Path(disk.parent.name).resolve() == (moved / parent_rel).resolve()
    finally:
        moved.rename(tmp_path)


def test_new_child_is_exactly_4MiB_and_reads_as_its_parent(tmp_path: Path) -> None:
    parent = tmp_path / "base.vhdx"
    with vhdx.create(parent, 24 * MiB, block_size=8 * MiB) as p:
        p.pwrite(3 * MiB + 17, os.urandom(5 * MiB))
        want = p.pread(0, p.size)
    vhdx.create(tmp_path / "child.vhdx", parent=parent).close()
    assert (tmp_path / "child.vhdx").stat().st_size == 4 * MiB  # VHDX-FORMAT.md 1.3: Windows layout
    c = read_image(tmp_path / "child.vhdx")
    assert all(state == 0 and offset == 0 for state, offset in c.payload_entries())
    with vhdx.open(tmp_path / "child.vhdx") as child:
        assert child.read() == want


# --- fixed images ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "block_size"),
    [(64 * MiB, 32 * MiB), (10 * MiB + 512, 4 * MiB), (3 * MiB, MiB), (4 * GiB + 2 * MiB, 256 * MiB),
     (5 * GiB + 8192, 32 * MiB)],
    ids=["64M-bs32M", "unaligned-bs4M", "3M-bs1M", "over-a-chunk-bs256M", "5G-unaligned-bs32M"],
)
def test_fixed_image_has_every_block_present_and_contiguous(tmp_path: Path, size: int, block_size: int) -> None:
    path = tmp_path / "fixed.vhdx"
    vhdx.create(path, size, disk_type="fixed", block_size=block_size).close()
    img = read_image(path)
    assert img.leave_block_allocated and not img.has_parent
    first = img.regions[BAT_GUID].file_offset + img.regions[BAT_GUID].length
    entries = img.payload_entries()
    assert len(entries) == -(-size // block_size)
    for block, (state, offset) in enumerate(entries):
        assert state == FULLY_PRESENT, f"block {block}"
        assert offset == first + block * block_size, f"block {block} is not contiguous"
    # Sector bitmap entries of a fixed file stay 0 (VHDX-FORMAT.md 8.2).
    for chunk in range(img.bitmap_blocks):
        assert img.bitmap_entry(chunk) == (0, 0)
    # Every block is a whole BlockSize, the last one included (VHDX-FORMAT.md 11).
    assert img.file_size == first + len(entries) * block_size
    # The payload reads as zeros, and by default nothing of it is allocated on the file system.
    st = os.stat(path)
    if hasattr(st, "st_blocks"):
        assert st.st_blocks * 512 < first + 2 * MiB, "fixed image is not sparse"
    with vhdx.open(path) as disk:
        assert disk.disk_type == "fixed"
        for offset in (0, size // 2 - 4096, size - 4096):
            assert disk.pread(offset, 4096) == bytes(4096)


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate on this platform")
def test_fixed_image_preallocated(tmp_path: Path) -> None:
    path = tmp_path / "fixed.vhdx"
    size = 16 * MiB
    vhdx.create(path, size, disk_type="fixed", block_size=4 * MiB, preallocate=True).close()
    st = os.stat(path)
    assert st.st_size == 4 * MiB + size
    assert st.st_blocks * 512 >= size, "preallocate=True left the payload sparse"
    with vhdx.open(path) as disk:
        assert disk.read() == bytes(size)


# --- layout (VHDX-FORMAT.md 1.3 and 11) -------------------------------------------------------------


def _bat_region_length(size: int, block_size: int, sector: int) -> int:
    """Ceil(8 * BB * (CR + 1) / 1 MiB) MiB (VHDX-FORMAT.md 8.5 "Writers", 11 step 6)."""
    cr = (1 << 23) * sector // block_size
    bb = -(-(-(-size // block_size)) // cr)
    return max(MiB, -(-8 * bb * (cr + 1) // MiB) * MiB)


# 64 TiB with 1 MiB blocks (a 513 MiB BAT) is left out: it is only the formula at a larger scale
# (checked by test_spec_worked_bat_sizes), and opening it takes several seconds.
LAYOUTS = [
    (dict(size=GiB), "dynamic"),
    (dict(size=127 * GiB, block_size=2 * MiB), "dynamic"),
    (dict(size=64 * TiB), "dynamic"),
    (dict(size=64 * TiB, block_size=256 * MiB, logical_sector_size=4096), "dynamic"),
    (dict(size=100 * GiB, block_size=MiB, logical_sector_size=4096), "dynamic"),
    (dict(size=10 * GiB, block_size=4 * MiB, log_size=4 * MiB), "dynamic"),
    (dict(size=64 * MiB, block_size=8 * MiB), "fixed"),
]


@pytest.mark.parametrize(("kwargs", "disk_type"), LAYOUTS, ids=lambda v: str(v) if isinstance(v, str) else
                         "-".join(f"{k}={w}" for k, w in v.items()))
def test_file_layout_follows_the_windows_layout(tmp_path: Path, kwargs: dict, disk_type: str) -> None:
    path = tmp_path / "layout.vhdx"
    kwargs = dict(kwargs)
    size = kwargs.pop("size")
    log_size = kwargs.get("log_size", MiB)
    block_size = kwargs.get("block_size", 32 * MiB)
    sector = kwargs.get("logical_sector_size", 512)
    vhdx.create(path, size, disk_type=disk_type, creator="layout test", **kwargs).close()
    img = read_image(path)
    assert img.creator == "layout test"

    h1, h2 = img.headers
    assert h1.valid and h2.valid
    assert {h1.sequence_number, h2.sequence_number} == {min(h1.sequence_number, h2.sequence_number),
                                                        min(h1.sequence_number, h2.sequence_number) + 1}
    for h in (h1, h2):
        assert (h.version, h.log_version, h.log_guid.int) == (1, 0, 0)
        assert (h.log_offset, h.log_length) == (MiB, log_size)
        assert (h.file_write_guid, h.data_write_guid) == (h1.file_write_guid, h1.data_write_guid)
    assert h1.data_write_guid.int and h1.file_write_guid.int

    # Both region tables identical; exactly BAT and metadata, Required = 1.
    assert img.region_tables[0] == img.region_tables[1]
    assert set(img.regions) == {BAT_GUID, METADATA_GUID}
    meta, bat = img.regions[METADATA_GUID], img.regions[BAT_GUID]
    assert meta.required and bat.required
    assert (meta.file_offset, meta.length) == (MiB + log_size, MiB)  # metadata right after the log
    assert bat.file_offset == meta.file_offset + meta.length  # BAT right after the metadata
    assert bat.length == _bat_region_length(size, block_size, sector)
    first_block = bat.file_offset + bat.length
    if disk_type == "fixed":
        assert img.payload_entry(0) == (FULLY_PRESENT, first_block)
    else:
        assert img.file_size == first_block  # nothing after the BAT yet
        assert not img.bat.any()

    # Metadata items: five system items from 64 KiB, with the spec's flags (VHDX-FORMAT.md 7.4).
    flags = {FILE_PARAMETERS: 0x4, VIRTUAL_DISK_SIZE: 0x6, VIRTUAL_DISK_ID: 0x6, LOGICAL_SECTOR: 0x6,
             PHYSICAL_SECTOR: 0x6}
    assert {k: e.flags for k, e in img.metadata_entries.items()} == flags
    items = sorted(img.metadata_entries.values(), key=lambda e: e.offset)
    assert items[0].offset >= 64 * KiB
    for a, b in zip(items, items[1:]):
        assert a.offset + a.length <= b.offset, "metadata items overlap"
    assert (img.virtual_size, img.block_size, img.logical_sector_size) == (size, block_size, sector)


def test_spec_worked_bat_sizes() -> None:
    """The helper above reproduces the BAT region column of VHDX-FORMAT.md 8.6."""
    assert _bat_region_length(127 * GiB, 32 * MiB, 512) == MiB
    assert _bat_region_length(100 * GiB, MiB, 4096) == 2 * MiB
    assert _bat_region_length(64 * TiB, 32 * MiB, 512) == 17 * MiB
    assert _bat_region_length(64 * TiB, MiB, 512) == 513 * MiB
    assert _bat_region_length(64 * TiB, 256 * MiB, 4096) == 3 * MiB


def test_differencing_child_layout_and_locator_item(tmp_path: Path) -> None:
    parent = tmp_path / "base.vhdx"
    vhdx.create(parent, GiB).close()
    vhdx.create(tmp_path / "child.vhdx", parent=parent).close()
    img = read_image(tmp_path / "child.vhdx")
    meta, bat = img.regions[METADATA_GUID], img.regions[BAT_GUID]
    assert (img.current.log_offset, meta.file_offset, bat.file_offset) == (MiB, 2 * MiB, 3 * MiB)
    assert bat.length == _bat_region_length(GiB, 2 * MiB, 512)
    assert img.metadata_entries[PARENT_LOCATOR].flags == 0x4  # IsRequired, not IsVirtualDisk
    assert len(img.metadata_entries) == 6


def test_disk_id_and_creator_are_stored(tmp_path: Path) -> None:
    disk_id = uuid.uuid4()
    path = tmp_path / "id.vhdx"
    with vhdx.create(path, 8 * MiB, disk_id=disk_id, creator="Somebody 1.0") as disk:
        assert disk.disk_id == disk_id
    img = read_image(path)
    assert img.disk_id == disk_id and img.creator == "Somebody 1.0"
    other = tmp_path / "other.vhdx"
    vhdx.create(other, 8 * MiB).close()
    assert read_image(other).disk_id not in (disk_id, uuid.UUID(int=0))


def test_returned_disk_is_writable_and_headers_untouched_until_written(tmp_path: Path) -> None:
    path = tmp_path / "new.vhdx"
    disk = vhdx.create(path, 8 * MiB, block_size=MiB)
    try:
        assert disk.mode == "r+b" and disk.writable()
        before = read_headers(path)
    finally:
        disk.close()
    assert read_headers(path) == before  # open + close without writing changes nothing


@pytest.mark.parametrize("target", ["base.vhdx", "link-to-base.vhdx", "mid.vhdx"])
def test_a_child_never_replaces_a_disk_of_its_own_chain(tmp_path: Path, target: str) -> None:
    """overwrite=True names the file to replace; when that file is the new child's parent (or an
    ancestor of it), replacing it would destroy the data the child is meant to build on and leave
    a chain that loops back to itself."""
    base, mid = tmp_path / "base.vhdx", tmp_path / "mid.vhdx"
    with vhdx.create(base, 8 * MiB) as disk:
        disk.pwrite(0, b"base data")
    vhdx.create(mid, parent=base).close()
    (tmp_path / "link-to-base.vhdx").symlink_to(base)
    digests = {p: file_digest(p) for p in (base, mid)}
    parent = base if target != "mid.vhdx" else mid
    with pytest.raises(ValueError, match="parent"):
        vhdx.create(tmp_path / target, parent=parent, overwrite=True)
    with pytest.raises(ValueError, match="parent"):
        vhdx.create(base, parent=mid, overwrite=True)  # the grandparent, reached through mid
    assert {p: file_digest(p) for p in (base, mid)} == digests
    assert _leftovers(tmp_path, {"base.vhdx", "mid.vhdx", "link-to-base.vhdx"}) == []
    with vhdx.open(mid) as disk:
        assert disk.pread(0, 9) == b"base data"
