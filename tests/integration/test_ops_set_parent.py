"""``vhdx.ops.set_parent``: re-point a differencing image at its parent after a move.

Oracles: a model of the writes that built each chain (helpers.WriteModel), the chain's digest read
before the move, file digests for "refused means untouched", dissect.hypervisor (which finds the
parent through the locator's relative_path on its own) as an independent reader of the re-pointed
child, and for the Hyper-V-made child the per-chunk digests recorded in the shared fixtures.
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import pytest
from craft import unchanged
from helpers import WriteModel, copy_to, fixture_path, image_of, load_expected, require_module

import vhdx
from vhdx.disk import open_engine
from vhdx.errors import ParentChainError, ParentMismatchError, ParentNotFoundError, UnsupportedError
from vhdx.ops import set_parent
from vhdx.ops.parent_link import stage_parent_locator

MiB = 1 << 20
SIZE = 8 * MiB
ZERO = "{00000000-0000-0000-0000-000000000000}"


def _digest(path: Path, **kw: object) -> str:
    with vhdx.open(path, **kw) as d:  # type: ignore[arg-type]
        return hashlib.sha256(d.read()).hexdigest()


def _locator(path: Path) -> dict[str, str]:
    with vhdx.open(path, require_parent=False, ignore_id_mismatch=True) as d:
        return dict(d.info().parent_locator or {})


def _guid(path: Path) -> str:
    with vhdx.open(path, require_parent=False, ignore_id_mismatch=True) as d:
        return d.info().data_write_guid


def make_base(path: Path, fill: int, *, size: int = SIZE, sector: int = 512) -> WriteModel:
    model = WriteModel(size)
    with vhdx.create(path, size, block_size=MiB, logical_sector_size=sector) as d:
        for offset, length in ((0, 2 * MiB), (5 * MiB, 4096)):
            d.pwrite(offset, bytes([fill]) * length)
            model.fill(offset, length, fill)
    return model


def make_child(child: Path, parent: Path, model: WriteModel) -> WriteModel:
    """A child whose writes are 4 KiB aligned (dissect reads partial blocks right only then)."""
    out = WriteModel(model.size)
    out.ops = list(model.ops)
    with vhdx.create(child, parent=parent, block_size=MiB) as d:
        for offset, length, byte in ((4096, 8192, 0x41), (3 * MiB, MiB, 0x42)):
            d.pwrite(offset, bytes([byte]) * length)
            out.fill(offset, length, byte)
    return out


def read_dissect(top: Path) -> bytes:
    require_module("dissect.hypervisor")
    from dissect.hypervisor.disk.vhdx import VHDX

    with open(top, "rb") as fh:
        disk = VHDX(fh)
        disk.seek(0)
        return disk.read(disk.size)  # type: ignore[no-any-return]


@pytest.mark.parametrize("where", ["same-folder", "sibling-folder", "child-below-parent"])
def test_move_breaks_the_locator_and_set_parent_repairs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           where: str) -> None:
    root = tmp_path / "root"
    made = root / "made"
    made.mkdir(parents=True)
    base_model = make_base(made / "base.vhdx", 0x11)
    model = make_child(made / "child.avhdx", made / "base.vhdx", base_model)
    with vhdx.create(made / "grand.avhdx", parent=made / "child.avhdx") as d:  # the child's own child
        d.pwrite(6 * MiB, b"\x77" * 4096)
    grand_model = WriteModel(SIZE)
    grand_model.ops = [*model.ops, (6 * MiB, 4096, 0x77)]
    assert _digest(made / "child.avhdx") == hashlib.sha256(model.full()).hexdigest()
    before_locator = _locator(made / "child.avhdx")
    child_guid = _guid(made / "child.avhdx")

    # The move: both files renamed, the base into another folder; the grandchild moves with the child.
    dest = root / "moved"
    parent_dir = {"same-folder": dest, "sibling-folder": root / "parents", "child-below-parent": root}[where]
    child_dir = dest if where != "child-below-parent" else root / "moved" / "deeper"
    child_dir.mkdir(parents=True, exist_ok=True)
    parent_dir.mkdir(parents=True, exist_ok=True)
    base = parent_dir / "base-renamed.vhdx"
    child = child_dir / "child.avhdx"  # keeps its name: the grandchild finds it by its relative_path
    shutil.move(made / "base.vhdx", base)
    shutil.move(made / "child.avhdx", child)
    shutil.move(made / "grand.avhdx", child_dir / "grand.avhdx")
    shutil.rmtree(made)
    with pytest.raises(ParentNotFoundError):
        vhdx.open(child)

    result = set_parent(child, base)

    assert result.changed and result.linkage_matched
    assert result.child_data_write_guid == child_guid == _guid(child)  # its own children stay linked
    assert result.locator_before == before_locator
    after = _locator(child)
    assert after == result.locator_after
    expected_relative = {"same-folder": ".\\base-renamed.vhdx",
                         "sibling-folder": "..\\parents\\base-renamed.vhdx",
                         "child-below-parent": "..\\..\\base-renamed.vhdx"}[where]
    assert after["relative_path"] == expected_relative
    assert after["absolute_win32_path"] == str(base.resolve()).replace("/", "\\")
    assert after["parent_linkage"] == before_locator["parent_linkage"]
    assert after["parent_linkage2"] == before_locator["parent_linkage2"] == ZERO
    assert "volume_path" not in after
    assert list(after)[:2] == ["parent_linkage", "parent_linkage2"]  # existing keys keep their place
    # The whole tree moves once more: only relative_path leads to the parent now. The chain opens
    # through it alone (from another working directory) and reads the same.
    root = root.rename(tmp_path / "root-moved")
    child_dir = root / child_dir.relative_to(tmp_path / "root")
    child = child_dir / child.name
    monkeypatch.chdir(tmp_path.parent)
    assert _digest(child) == hashlib.sha256(model.full()).hexdigest()
    assert _digest(child_dir / "grand.avhdx") == hashlib.sha256(grand_model.full()).hexdigest()
    with vhdx.open(child) as d:
        info = d.info()
        assert info.log_state == "empty" and info.parent_link_ok
    # An independent reader follows the new relative_path by itself.
    assert read_dissect(child) == model.full()


def test_set_parent_to_where_it_already_points_writes_nothing(tmp_path: Path) -> None:
    model = make_base(tmp_path / "base.vhdx", 0x11)
    make_child(tmp_path / "child.avhdx", tmp_path / "base.vhdx", model)
    # A new child's locator is what set_parent would write (both come from parent_locator_entries).
    with unchanged(tmp_path / "child.avhdx"):
        result = set_parent(tmp_path / "child.avhdx", tmp_path / "base.vhdx")
    assert not result.changed and result.locator_before == result.locator_after
    # After a real change, a second identical request writes nothing either.
    (tmp_path / "sub").mkdir()
    shutil.move(tmp_path / "base.vhdx", tmp_path / "sub" / "base.vhdx")
    assert set_parent(tmp_path / "child.avhdx", tmp_path / "sub" / "base.vhdx").changed
    with unchanged(tmp_path / "child.avhdx"):
        again = set_parent(tmp_path / "child.avhdx", tmp_path / "sub" / "base.vhdx")
    assert not again.changed


def test_wrong_parent_is_refused_and_the_child_untouched(tmp_path: Path) -> None:
    model = make_base(tmp_path / "base.vhdx", 0x11)
    make_child(tmp_path / "child.avhdx", tmp_path / "base.vhdx", model)
    make_base(tmp_path / "other.vhdx", 0x99)  # same size and sectors, another disk
    with unchanged(tmp_path / "child.avhdx", tmp_path / "other.vhdx"), pytest.raises(ParentMismatchError) as err:
        set_parent(tmp_path / "child.avhdx", tmp_path / "other.vhdx")
    assert "DataWriteGuid" in str(err.value)
    # A parent modified after the child was made is refused the same way.
    with vhdx.open(tmp_path / "base.vhdx", "r+b") as d:
        d.pwrite(0, b"changed")
    with unchanged(tmp_path / "child.avhdx"), pytest.raises(ParentMismatchError):
        set_parent(tmp_path / "child.avhdx", tmp_path / "base.vhdx")


def test_ignore_id_mismatch_records_the_new_parent(tmp_path: Path) -> None:
    base_model = make_base(tmp_path / "base.vhdx", 0x11)
    child_model = make_child(tmp_path / "child.avhdx", tmp_path / "base.vhdx", base_model)
    other_model = make_base(tmp_path / "other.vhdx", 0x99)
    child_guid = _guid(tmp_path / "child.avhdx")
    result = set_parent(tmp_path / "child.avhdx", tmp_path / "other.vhdx", ignore_id_mismatch=True)
    assert result.changed and not result.linkage_matched
    after = _locator(tmp_path / "child.avhdx")
    assert after["parent_linkage"] == "{" + _guid(tmp_path / "other.vhdx") + "}" == "{" + result.parent_data_write_guid + "}"
    assert after["parent_linkage2"] == ZERO
    assert after["relative_path"] == ".\\other.vhdx"
    assert _guid(tmp_path / "child.avhdx") == child_guid
    # Opens now without any override: the child's sectors over the new parent's.
    expected = bytearray(other_model.full())
    for offset, length, byte in child_model.ops[len(base_model.ops):]:
        expected[offset : offset + length] = bytes([byte]) * length  # type: ignore[list-item]
    assert _digest(tmp_path / "child.avhdx") == hashlib.sha256(bytes(expected)).hexdigest()


def test_parent_linkage2_is_accepted(tmp_path: Path) -> None:
    # A merge in progress records the parent's next DataWriteGuid in parent_linkage2 (7.6): a
    # parent carrying that one is the right parent.
    model = make_base(tmp_path / "base.vhdx", 0x11)
    make_child(tmp_path / "child.avhdx", tmp_path / "base.vhdx", model)
    engine = open_engine(tmp_path / "child.avhdx", writable=True)
    try:
        stage_parent_locator(engine, linkage=uuid.uuid4(), linkage2=uuid.UUID(_guid(tmp_path / "base.vhdx")))
    finally:
        engine.close()
    result = set_parent(tmp_path / "child.avhdx", tmp_path / "base.vhdx")
    assert result.linkage_matched
    assert result.locator_after["parent_linkage"] == result.locator_before["parent_linkage"]


@pytest.mark.parametrize("mismatch", ["virtual-size", "logical-sector-size"])
def test_geometry_mismatch_is_refused_even_when_ids_are_ignored(tmp_path: Path, mismatch: str) -> None:
    model = make_base(tmp_path / "base.vhdx", 0x11)
    make_child(tmp_path / "child.avhdx", tmp_path / "base.vhdx", model)
    if mismatch == "virtual-size":
        make_base(tmp_path / "other.vhdx", 0x99, size=SIZE + MiB)
    else:
        make_base(tmp_path / "other.vhdx", 0x99, sector=4096)
    with unchanged(tmp_path / "child.avhdx"), pytest.raises(ParentMismatchError):
        set_parent(tmp_path / "child.avhdx", tmp_path / "other.vhdx", ignore_id_mismatch=True)


def test_self_and_cycles_are_refused(tmp_path: Path) -> None:
    model = make_base(tmp_path / "base.vhdx", 0x11)
    make_child(tmp_path / "child.avhdx", tmp_path / "base.vhdx", model)
    with vhdx.create(tmp_path / "grand.avhdx", parent=tmp_path / "child.avhdx"):
        pass
    child = tmp_path / "child.avhdx"
    with unchanged(child), pytest.raises(ParentChainError):
        set_parent(child, child, ignore_id_mismatch=True)
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "alias.avhdx").symlink_to(child)
    with unchanged(child), pytest.raises(ParentChainError):
        set_parent(child, tmp_path / "link" / "alias.avhdx", ignore_id_mismatch=True)
    # The grandchild's chain leads back to the child: the chain would loop.
    with unchanged(child), pytest.raises(ParentChainError):
        set_parent(child, tmp_path / "grand.avhdx", ignore_id_mismatch=True)


def test_parent_with_a_broken_chain_is_refused(tmp_path: Path) -> None:
    model = make_base(tmp_path / "base.vhdx", 0x11)
    make_child(tmp_path / "child.avhdx", tmp_path / "base.vhdx", model)
    with vhdx.create(tmp_path / "grand.avhdx", parent=tmp_path / "child.avhdx"):
        pass
    (tmp_path / "base.vhdx").rename(tmp_path / "gone.vhdx")
    # Re-pointing the grandchild at the child: the child itself cannot reach its parent.
    with unchanged(tmp_path / "grand.avhdx"), pytest.raises(ParentNotFoundError):
        set_parent(tmp_path / "grand.avhdx", tmp_path / "child.avhdx")


def test_non_differencing_and_missing_files(tmp_path: Path) -> None:
    make_base(tmp_path / "a.vhdx", 0x11)
    make_base(tmp_path / "b.vhdx", 0x22)
    with unchanged(tmp_path / "a.vhdx"), pytest.raises(UnsupportedError):
        set_parent(tmp_path / "a.vhdx", tmp_path / "b.vhdx")
    with pytest.raises(FileNotFoundError):
        set_parent(tmp_path / "a.vhdx", tmp_path / "nope.vhdx")


def test_hyperv_child_repointed(tmp_path: Path) -> None:
    # The Hyper-V-made child (Windows 10.0.17763) of the shared fixtures, whose locator names a
    # parent on a Windows host, pointed at the stand-in parent stored elsewhere under another name.
    import json

    from helpers import shared_fixtures_dir

    (entry,) = [e for e in load_expected() if e.id == "dissect.hypervisor/differencing.avhdx+synthetic-parent"]
    (tmp_path / "vm").mkdir()
    (tmp_path / "base").mkdir()
    child = copy_to(image_of(entry), tmp_path / "vm", "disk.avhdx")
    parent = copy_to(fixture_path(entry.parent_file, entry.parent_name_on_disk), tmp_path / "base", "parent.vhdx")
    before = _locator(child)
    guid = _guid(child)
    with pytest.raises(ParentNotFoundError):
        vhdx.open(child)
    result = set_parent(child, parent)
    assert result.linkage_matched and result.changed
    after = _locator(child)
    assert set(before) == {"parent_linkage", "parent_linkage2", "relative_path", "volume_path", "absolute_win32_path"}
    assert after["relative_path"] == "..\\base\\parent.vhdx"
    assert "volume_path" not in after
    assert {k: after[k] for k in ("parent_linkage", "parent_linkage2")} == {
        k: before[k] for k in ("parent_linkage", "parent_linkage2")}
    assert _guid(child) == guid
    # Content: every chunk recorded as holding data, and every chunk we map as data, as recorded.
    data = json.loads((shared_fixtures_dir().parent / entry.chunks).read_text())
    chunk = int(data["chunk_size"])
    nonzero = {int(k): v for k, v in data["nonzero"].items()}
    zero = hashlib.sha256(bytes(chunk)).hexdigest()
    with vhdx.open(child) as disk:
        touched = set(nonzero)
        for e in disk.extents():
            if e.state == "data":
                touched.update(range(e.virtual_offset // chunk, (e.virtual_offset + e.length - 1) // chunk + 1))
        for index in sorted(touched):
            assert hashlib.sha256(disk.pread(index * chunk, chunk)).hexdigest() == nonzero.get(index, zero), index
    # The rewritten metadata region reads right in an independent reader that finds the parent
    # through the locator by itself (with the absolute path made useless by moving both).
    require_module("dissect.hypervisor")
    from dissect.hypervisor.disk.vhdx import VHDX

    moved = tmp_path.rename(tmp_path.with_name(tmp_path.name + "-moved"))
    with open(moved / "vm" / "disk.avhdx", "rb") as fh:
        other = VHDX(fh)
        for index, digest in sorted(nonzero.items()):
            other.seek(index * chunk)
            assert hashlib.sha256(other.read(chunk)).hexdigest() == digest, index


@pytest.mark.interop
def test_fattools_child_repointed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A chain written by another producer (FATtools), moved and renamed, then re-pointed.
    vu = require_module("FATtools.vhdxutils")
    made = tmp_path / "made"
    made.mkdir()
    model = WriteModel(SIZE)
    with monkeypatch.context() as m:
        m.chdir(made)  # FATtools resolves parents relative to the current directory
        vu.mk_dynamic("base.vhdx", SIZE, block=MiB)
        image = vu.Image("base.vhdx", "rb+")
        try:
            image.seek(0)
            image.write(b"\x21" * (2 * MiB))
            model.fill(0, 2 * MiB, 0x21)
        finally:
            image.close()
        # FATtools records relative_path as ".\base.vhdx" and opens that literal name when writing
        # through the child; a link by that name lets it (see test_chains.py).
        (made / ".\\base.vhdx").symlink_to("base.vhdx")
        vu.mk_diff("child.vhdx", "base.vhdx", block=MiB)
        image = vu.Image("child.vhdx", "rb+")
        try:
            image.seek(MiB)
            image.write(b"\x22" * (2 * MiB))
            model.fill(MiB, 2 * MiB, 0x22)
        finally:
            image.close()
    assert _digest(made / "child.vhdx") == hashlib.sha256(model.full()).hexdigest()
    guid = _guid(made / "child.vhdx")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.move(made / "base.vhdx", tmp_path / "b" / "golden.vhdx")
    shutil.move(made / "child.vhdx", tmp_path / "a" / "diff.vhdx")
    shutil.rmtree(made)
    child = tmp_path / "a" / "diff.vhdx"
    with pytest.raises(ParentNotFoundError):
        vhdx.open(child)
    result = set_parent(child, tmp_path / "b" / "golden.vhdx")
    assert result.linkage_matched and result.changed
    assert _guid(child) == guid
    assert _locator(child)["relative_path"] == "..\\b\\golden.vhdx"
    monkeypatch.chdir(tmp_path / "a")
    assert _digest(child) == hashlib.sha256(model.full()).hexdigest()
    assert read_dissect(child) == model.full()
