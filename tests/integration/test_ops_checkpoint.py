"""``vhdx.ops.checkpoint``: offline Hyper-V-style checkpoints (create, list, revert, delete).

Oracles: the content of each disk of the chain read before the operation (what the active disk
reads must not change on create and delete; revert must bring back exactly the checkpoint's
content), the file system (which files exist), file digests for "refused means untouched", and
the parent locators read back.
"""

from __future__ import annotations

import os
import random
import re
import uuid
from pathlib import Path

import pytest
from craft import unchanged
from merge_support import MiB, content, data_write_guid, locator, make_chain, scribble

import vhdx
from vhdx.errors import ParentMismatchError, VhdxError
from vhdx.ops import create_checkpoint, delete_checkpoint, list_checkpoints, revert_checkpoint
from vhdx.ops.checkpoint import checkpoint_chain

NAME = re.compile(r"^(?P<name>.+)_(?P<guid>[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12})\.avhdx$")


def _write(path: Path, seed: object, ops: int = 12) -> None:
    with vhdx.open(path, "r+b") as d:
        scribble(d, random.Random(f"cp-{seed}"), ops)


def _names(paths: list[str]) -> list[str]:
    return [Path(p).name for p in paths]


def test_create_names_the_disk_as_hyper_v_and_makes_it_active(tmp_path: Path) -> None:
    (base,) = make_chain(tmp_path, ["Disk.vhdx"], seed="create")
    before = content(base)
    result = create_checkpoint(base)
    new = Path(result.checkpoint)
    match = NAME.match(new.name)
    assert match and match["name"] == "Disk" and uuid.UUID(match["guid"])
    assert new.parent == tmp_path and result.active == str(new)
    assert _names(result.chain) == ["Disk.vhdx", new.name]
    assert content(new) == before
    with vhdx.open(new) as d:
        assert d.disk_type == "differencing" and Path(d.parent.name).resolve() == base.resolve()
    assert result.file_size_after == new.stat().st_size

    # From any disk of the chain, the next checkpoint goes on top of the active (newest) disk.
    _write(new, 1)
    second = create_checkpoint(base, name="nightly")
    assert NAME.match(Path(second.checkpoint).name)["name"] == "nightly"
    with vhdx.open(second.checkpoint) as d:
        assert Path(d.parent.name).resolve() == new.resolve()
    third = create_checkpoint(new)
    assert Path(third.chain[-2]).resolve() == Path(second.checkpoint).resolve()
    assert len({Path(p).name for p in third.chain}) == 4


def test_list_gives_the_chain_in_creation_order_with_sizes(tmp_path: Path) -> None:
    (base,) = make_chain(tmp_path, ["vm.vhdx"], sector=4096, seed="list")
    made = []
    for i in range(3):
        made.append(create_checkpoint(base).checkpoint)
        _write(Path(made[-1]), i)  # only the active disk is written
    listing = list_checkpoints(made[1])
    assert [Path(d.path).resolve() for d in listing.disks] == [Path(p).resolve() for p in [base, *made]]
    assert [d.index for d in listing.disks] == [0, 1, 2, 3]
    assert [d.kind for d in listing.disks] == ["base", "checkpoint", "checkpoint", "checkpoint"]
    assert [d.active for d in listing.disks] == [False, False, False, True]
    for disk in listing.disks:
        st = os.stat(disk.path)
        assert disk.file_size == st.st_size and disk.modified == st.st_mtime
        assert disk.data_write_guid == data_write_guid(Path(disk.path))
    assert listing.base == listing.disks[0].path and listing.active == listing.disks[-1].path
    assert listing.leftovers == []
    document = listing.as_dict()
    assert document["disks"][3]["active"] is True


def test_revert_discards_what_was_written_since_the_checkpoint(tmp_path: Path) -> None:
    (base,) = make_chain(tmp_path, ["disk.vhdx"], seed="revert")
    first = Path(create_checkpoint(base).checkpoint)
    _write(first, "a")
    at_checkpoint = content(first)
    second = Path(create_checkpoint(base).checkpoint)
    _write(second, "b")
    assert content(second) != at_checkpoint
    result = revert_checkpoint(base)
    assert Path(result.checkpoint) == second and not second.exists()
    assert Path(result.active) == first and content(first) == at_checkpoint
    assert _names(checkpoint_chain(base)) == ["disk.vhdx", first.name]
    revert_checkpoint(first)
    assert not first.exists()
    with unchanged(base):
        with pytest.raises(VhdxError, match="no checkpoint"):
            revert_checkpoint(base)


@pytest.mark.parametrize("sector", [512, 4096])
def test_delete_newest_merges_it_into_its_parent(tmp_path: Path, sector: int) -> None:
    base, c1, c2 = make_chain(tmp_path, ["disk.vhdx", "disk_A.avhdx", "disk_B.avhdx"], sector=sector, seed="newest")
    active = content(c2)
    base_before = content(base)
    result = delete_checkpoint(base)
    assert Path(result.checkpoint) == c2 and not c2.exists()
    assert Path(result.active) == c1 and content(c1) == active
    assert content(base) == base_before
    assert result.merge is not None and Path(result.merge.target) == c1
    assert _names(checkpoint_chain(c1)) == ["disk.vhdx", "disk_A.avhdx"]


@pytest.mark.parametrize("sector", [512, 4096])
def test_delete_from_the_middle_repoints_the_next_disk(tmp_path: Path, sector: int) -> None:
    base, c1, c2, c3 = make_chain(tmp_path, ["disk.vhdx", "disk_1.avhdx", "disk_2.avhdx", "disk_3.avhdx"],
                                  sector=sector, seed=f"middle-{sector}")
    active, at_c2 = content(c3), content(c2)
    result = delete_checkpoint(c3, "disk_1.avhdx")
    assert Path(result.checkpoint) == c1 and not c1.exists()
    assert content(c3) == active and content(c2) == at_c2
    loc = locator(c2)
    assert loc["relative_path"] == ".\\disk.vhdx"
    assert uuid.UUID(loc["parent_linkage"].strip("{}")) == uuid.UUID(data_write_guid(base))
    assert "parent_linkage2" not in loc
    assert result.merge is not None and _names(result.merge.reparented) == ["disk_2.avhdx"]
    assert _names(checkpoint_chain(base)) == ["disk.vhdx", "disk_2.avhdx", "disk_3.avhdx"]
    assert _names(result.chain) == ["disk.vhdx", "disk_2.avhdx", "disk_3.avhdx"]


def test_delete_refuses_the_base_and_strangers(tmp_path: Path) -> None:
    base, c1 = make_chain(tmp_path, ["disk.vhdx", "disk_1.avhdx"], seed="refuse", ops=3)
    other = tmp_path / "other.vhdx"
    vhdx.create(other, MiB).close()
    with unchanged(base, c1):
        with pytest.raises(ValueError, match="base disk"):
            delete_checkpoint(c1, base)
        with pytest.raises(ValueError, match="not a disk of the checkpoint chain"):
            delete_checkpoint(c1, "other.vhdx")
    (tmp_path / "alone").mkdir()
    (lonely,) = make_chain(tmp_path / "alone", ["lonely.vhdx"], ops=1)
    with unchanged(lonely):
        with pytest.raises(VhdxError, match="no checkpoint"):
            delete_checkpoint(lonely)


def test_a_branching_chain_is_refused(tmp_path: Path) -> None:
    base, c1 = make_chain(tmp_path, ["disk.vhdx", "disk_1.avhdx"], seed="branch", ops=3)
    vhdx.create(tmp_path / "disk_2.avhdx", parent=base).close()
    with unchanged(base, c1):
        for op in (list_checkpoints, create_checkpoint, revert_checkpoint, delete_checkpoint):
            with pytest.raises(VhdxError, match="not a linear checkpoint chain"):
                op(base)


def test_children_must_be_linked_not_only_named(tmp_path: Path) -> None:
    """A differencing image whose locator names the disk but whose linkage does not match (made
    from an older state of it) is not part of the chain."""
    base, c1 = make_chain(tmp_path, ["disk.vhdx", "disk_1.avhdx"], seed="stale", ops=3)
    with vhdx.open(base, "r+b") as d:  # the base changes: c1 is orphaned
        d.pwrite(0, b"new data")
    assert _names(checkpoint_chain(base)) == ["disk.vhdx"]
    with pytest.raises(ParentMismatchError):
        checkpoint_chain(c1)


def test_an_interrupted_middle_delete_leaves_a_listed_leftover(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, c1, c2 = make_chain(tmp_path, ["disk.vhdx", "disk_1.avhdx", "disk_2.avhdx"], seed="leftover")
    active = content(c2)

    def no_unlink(path: object, *a: object, **k: object) -> None:
        raise OSError(28, "simulated crash before the removal")

    monkeypatch.setattr(os, "unlink", no_unlink)
    with pytest.raises(OSError, match="simulated"):
        delete_checkpoint(base, c1)
    monkeypatch.undo()
    # c2 already names the merged base; c1 is still there, linked only through parent_linkage2.
    assert content(c2) == active
    listing = list_checkpoints(base)
    assert _names([d.path for d in listing.disks]) == ["disk.vhdx", "disk_2.avhdx"]
    assert _names(listing.leftovers) == ["disk_1.avhdx"]
    assert content(c1) == content(base)  # nothing of its own left that the base lacks
    # Running the same command again completes it.
    result = delete_checkpoint(base, c1)
    assert Path(result.checkpoint) == c1 and not c1.exists() and result.merge is None
    assert list_checkpoints(base).leftovers == [] and content(c2) == active
