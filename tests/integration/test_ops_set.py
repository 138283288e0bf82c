"""``vhdx.ops.set_properties``: a new Virtual Disk ID, another physical sector size, in place.

Oracles: the disk's sha256 taken before the change (nothing a reader sees may change), the
DataWriteGuid before (kept: children stay linked), info() read back, the metadata item bytes
written by hand before (unknown items kept), and qemu-img check / compare / info run on the result
for images QEMU can read.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from craft import metadata_items, read_layout, rewrite_metadata, unchanged
from helpers import copy_to, fixture_path, require_tool, run

import vhdx
from vhdx.constants import METADATA_FLAG_IS_USER
from vhdx.disk import open_engine
from vhdx.model.metadata import MetadataItem
from vhdx.ops import set_properties

MiB = 1 << 20


def _digest(path: Path) -> str:
    with vhdx.open(path) as d:
        return hashlib.sha256(d.read()).hexdigest()


def _info(path: Path) -> vhdx.DiskInfo:
    with vhdx.open(path) as d:
        return d.info()


def make(path: Path, *, physical: int = 4096) -> None:
    with vhdx.create(path, 16 * MiB, block_size=MiB, physical_sector_size=physical) as d:
        d.pwrite(0, b"\x5a" * (3 * MiB))
        d.pwrite(9 * MiB + 512, b"tail" * 300)


def test_reset_disk_id(tmp_path: Path) -> None:
    path = tmp_path / "a.vhdx"
    make(path)
    digest, before = _digest(path), _info(path)
    result = set_properties(path, reset_disk_id=True)
    after = _info(path)
    assert result.changed
    assert after.disk_id == result.disk_id_after != before.disk_id == result.disk_id_before
    assert after.data_write_guid == before.data_write_guid == result.data_write_guid
    assert after.log_state == "empty"
    assert after.physical_sector_size == before.physical_sector_size
    assert _digest(path) == digest
    assert result.file_size_after == result.file_size_before == path.stat().st_size


def test_explicit_disk_id_and_no_op(tmp_path: Path) -> None:
    path = tmp_path / "a.vhdx"
    make(path)
    wanted = uuid.uuid4()
    set_properties(path, disk_id=wanted)
    assert _info(path).disk_id == str(wanted)
    with unchanged(path):
        same = set_properties(path, disk_id=wanted, physical_sector_size=4096)  # what it already has
        nothing = set_properties(path)
    assert not same.changed and not nothing.changed


@pytest.mark.parametrize(("start", "target"), [(512, 4096), (4096, 512)])
def test_physical_sector_size(tmp_path: Path, start: int, target: int) -> None:
    path = tmp_path / "a.vhdx"
    make(path, physical=start)
    digest, before = _digest(path), _info(path)
    result = set_properties(path, physical_sector_size=target)
    after = _info(path)
    assert (result.physical_sector_size_before, result.physical_sector_size_after) == (start, target)
    assert after.physical_sector_size == target and after.logical_sector_size == before.logical_sector_size
    assert after.disk_id == before.disk_id and after.data_write_guid == before.data_write_guid
    assert _digest(path) == digest


def test_invalid_requests(tmp_path: Path) -> None:
    path = tmp_path / "a.vhdx"
    make(path)
    with unchanged(path):
        with pytest.raises(ValueError):
            set_properties(path, physical_sector_size=1024)
        with pytest.raises(ValueError):
            set_properties(path, reset_disk_id=True, disk_id=uuid.uuid4())


def test_unknown_metadata_items_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "a.vhdx"
    make(path)
    layout = read_layout(path)
    user_id = uuid.uuid4()
    user_data = b"kept across the rewrite" * 3
    rewrite_metadata(path, [*metadata_items(layout), MetadataItem(user_id, user_data, METADATA_FLAG_IS_USER)], layout)
    digest = _digest(path)
    set_properties(path, reset_disk_id=True, physical_sector_size=512)
    engine = open_engine(path)
    try:
        (entry,) = [e for e in engine.image.metadata.entries if e.item_id == user_id]
        region = engine.image.region_table.metadata
        buf = bytearray(entry.length)
        engine.image.source.readinto(region.file_offset + entry.offset, memoryview(buf))
        assert bytes(buf) == user_data and entry.flags == METADATA_FLAG_IS_USER
        assert engine.image.metadata.physical_sector_size == 512
    finally:
        engine.close()
    assert _digest(path) == digest


def test_parent_disk_id_reset_keeps_children_linked(tmp_path: Path) -> None:
    # Children record their parent's DataWriteGuid (parent_linkage, VHDX-FORMAT.md 7.6), not its
    # disk id: a new disk id on the parent leaves them linked.
    parent = tmp_path / "base.vhdx"
    make(parent)
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=parent) as d:
        d.pwrite(MiB, b"child" * 1000)
    digest = _digest(child)
    old_id = _info(parent).disk_id
    set_properties(parent, reset_disk_id=True)
    info = _info(child)
    assert info.parent_link_ok
    assert info.disk_id == old_id != _info(parent).disk_id  # the child keeps the id it copied
    assert _digest(child) == digest
    # The child itself (opened with its chain) can be changed too.
    result = set_properties(child, physical_sector_size=512, reset_disk_id=True)
    assert result.changed and _info(child).physical_sector_size == 512
    assert _digest(child) == digest


@pytest.mark.interop
@pytest.mark.parametrize("name", ["dyn-64M-bs1M.vhdx", "fixed-64M-bs8M.vhdx"])
def test_qemu_made_images_stay_clean(tmp_path: Path, name: str) -> None:
    require_tool("qemu-img")
    original = fixture_path(f"fixtures/qemu/{name}.xz", name)
    path = copy_to(original, tmp_path, "work.vhdx")
    before = json.loads(run("qemu-img", "info", "--output=json", str(path)).stdout)
    start = _info(path).physical_sector_size
    target = 4096 if start == 512 else 512
    set_properties(path, physical_sector_size=target, reset_disk_id=True)
    assert _info(path).physical_sector_size == target
    assert run("qemu-img", "check", str(path), check=False).returncode == 0
    assert run("qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", str(original), str(path), check=False).returncode == 0
    after = json.loads(run("qemu-img", "info", "--output=json", str(path)).stdout)
    assert after["virtual-size"] == before["virtual-size"]
    assert after.get("dirty-flag") is False


@pytest.mark.interop
def test_our_image_stays_clean_for_qemu(tmp_path: Path) -> None:
    require_tool("qemu-img")
    path = tmp_path / "a.vhdx"
    make(path, physical=512)
    reference = copy_to(path, tmp_path, "ref.vhdx")
    set_properties(path, physical_sector_size=4096, reset_disk_id=True)
    assert run("qemu-img", "check", str(path), check=False).returncode == 0
    assert run("qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", str(reference), str(path), check=False).returncode == 0
