"""``vhdx.ops.merge``: a differencing child folded into its parent or a farther ancestor, in place.

Oracles: the content of the child's chain read before the merge (the target must read the same
afterwards, byte for byte); a raw flatten made with ``convert`` before the merge, compared by
``qemu-img compare`` with the merged target, and ``qemu-img check`` on it (both when the target
is a 512-byte non-differencing image, which qemu can open); file digests for "refused means
untouched".
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import random
import subprocess
import uuid
from pathlib import Path

import pytest
from craft import unchanged
from helpers import copy_to, fixture_path, image_of, load_expected, require_tool, shared_fixtures_dir
from merge_support import MiB, content, data_write_guid, digest, locator, make_chain, scribble

import vhdx
from vhdx.disk import open_engine
from vhdx.errors import ParentMismatchError, VhdxError
from vhdx.ops import check, convert, merge

# vhdx.ops.merge is also the name of the function, which shadows the module as an attribute.
merge_module = importlib.import_module("vhdx.ops.merge")
from vhdx.model.parent_locator import build_parent_locator


def _qemu_compare(raw: Path, image: Path) -> None:
    require_tool("qemu-img")
    r = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(image)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vhdx", str(raw), str(image)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def _clean(path: Path) -> None:
    report = check(path)
    assert report.corruptions == 0, report


# (names, sector, base type, block sizes, into index) -- into: which layer is the target (0 = base)
CASES = [
    pytest.param(["base.vhdx", "child.avhdx"], 512, "dynamic", [4 * MiB, 1 * MiB], 0, id="depth2-512-dynamic"),
    pytest.param(["base.vhdx", "child.avhdx"], 4096, "dynamic", [1 * MiB, 2 * MiB], 0, id="depth2-4096"),
    pytest.param(["base.vhdx", "child.avhdx"], 512, "fixed", [2 * MiB, 1 * MiB], 0, id="depth2-512-fixed"),
    pytest.param(["base.vhdx", "mid.avhdx", "top.avhdx"], 512, "dynamic", [8 * MiB, 1 * MiB, 2 * MiB], 0,
                 id="depth3-into-grandparent-512"),
    pytest.param(["base.vhdx", "mid.avhdx", "top.avhdx"], 4096, "dynamic", [2 * MiB, 4 * MiB, 1 * MiB], 0,
                 id="depth3-into-grandparent-4096"),
    pytest.param(["base.vhdx", "mid.avhdx", "top.avhdx"], 512, "dynamic", [4 * MiB, 2 * MiB, 1 * MiB], 1,
                 id="depth3-into-differencing-parent"),
    pytest.param(["a.vhdx", "b.avhdx", "c.avhdx", "d.avhdx"], 4096, "fixed", [1 * MiB, 2 * MiB, 1 * MiB, 4 * MiB], 0,
                 id="depth4-into-base-4096-fixed"),
]


@pytest.mark.parametrize("names,sector,base_type,blocks,target_index", CASES)
def test_merge_target_reads_as_the_child_did(tmp_path: Path, names: list[str], sector: int, base_type: str,
                                             blocks: list[int], target_index: int) -> None:
    paths = make_chain(tmp_path, names, sector=sector, block_sizes=blocks, base_type=base_type, seed=names + [sector])
    child, target = paths[-1], paths[target_index]
    before = content(child)
    assert before != content(target)  # the merge has something to do
    below = [content(p) for p in paths[:target_index]]  # layers under the target are not touched
    raw = None
    qemu = sector == 512 and target_index == 0
    if qemu:
        raw = tmp_path / "flat.raw"
        convert(child, raw)
    old_guid = data_write_guid(target)
    into = None if target_index == len(paths) - 2 else target
    result = merge(child, into=into)

    assert content(target) == before
    merged = paths[target_index + 1 :]
    assert [Path(p).resolve() for p in result.merged] == [p.resolve() for p in reversed(merged)]
    assert sorted(Path(p).resolve() for p in result.removed) == sorted(p.resolve() for p in merged)
    assert not any(p.exists() for p in merged)
    assert Path(result.target).resolve() == target.resolve()
    new_guid = data_write_guid(target)
    assert new_guid != old_guid and new_guid == result.data_write_guid
    assert [content(p) for p in paths[:target_index]] == below
    with vhdx.open(target) as d:
        info = d.info()
        assert info.log_state == "empty"
        assert d.disk_type == (base_type if target_index == 0 else "differencing")
    assert result.bytes_written == result.bytes_read > 0
    assert result.file_size_after == target.stat().st_size
    _clean(target)
    if raw is not None:
        _qemu_compare(raw, target)


def test_merge_keep_leaves_the_chain_readable_and_says_so(tmp_path: Path) -> None:
    base, mid, top = make_chain(tmp_path, ["base.vhdx", "mid.avhdx", "top.avhdx"], seed="keep")
    before = content(top)
    mid_before = content(mid)
    result = merge(top, into=base, keep=True)
    assert result.kept and result.removed == [] and top.exists() and mid.exists()
    assert content(base) == before
    # The child still reads the same over the merged target (the link holds through
    # parent_linkage2), but the image between no longer holds its own state.
    assert content(top) == before
    assert content(mid) != mid_before
    assert uuid.UUID(locator(mid)["parent_linkage2"].strip("{}")) == uuid.UUID(result.data_write_guid)


def test_merge_refuses_when_the_target_has_other_children(tmp_path: Path) -> None:
    base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="sib")
    sibling = tmp_path / "other.avhdx"
    with vhdx.create(sibling, parent=base, block_size=MiB) as d:
        d.pwrite(0, b"sibling")
    with unchanged(base, child, sibling):
        with pytest.raises(VhdxError, match="other.avhdx"):
            merge(child)
    before = content(child)
    result = merge(child, force=True)
    assert content(base) == before
    assert [Path(p).name for p in result.orphaned] == ["other.avhdx"]
    with pytest.raises(ParentMismatchError):
        vhdx.open(sibling)


def test_merge_finds_children_in_search_folders_and_of_removed_images(tmp_path: Path) -> None:
    chain_dir, elsewhere = tmp_path / "chain", tmp_path / "elsewhere"
    chain_dir.mkdir()
    elsewhere.mkdir()
    base, mid, top = make_chain(chain_dir, ["base.vhdx", "mid.avhdx", "top.avhdx"], seed="search")
    # A child of the intermediate image, kept in another folder (its locator names mid by a
    # relative path): merging into base changes what mid holds, so it would be orphaned.
    branch = elsewhere / "branch.avhdx"
    vhdx.create(branch, parent=mid, block_size=MiB).close()
    with unchanged(base, mid, top, branch):
        with pytest.raises(VhdxError, match="branch.avhdx"):
            merge(top, into=base, search=[elsewhere])
    before = content(top)
    result = merge(top, into=base)  # not looked for there without search: the merge goes ahead
    assert result.orphaned == [] and content(base) == before


def test_children_of_the_child_block_a_removing_merge_but_not_keep(tmp_path: Path) -> None:
    base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="grandchild")
    grandchild = tmp_path / "grand.avhdx"
    with vhdx.create(grandchild, parent=child, block_size=MiB) as d:
        d.pwrite(12345, b"g" * 999)
    before = content(grandchild)
    with unchanged(base, child, grandchild):
        with pytest.raises(VhdxError, match="grand.avhdx"):
            merge(child)
    result = merge(child, keep=True)
    assert result.orphaned == []
    assert content(grandchild) == before  # grand -> child -> merged base reads as before


def test_merge_refuses_bad_requests(tmp_path: Path) -> None:
    base, mid, top = make_chain(tmp_path, ["base.vhdx", "mid.avhdx", "top.avhdx"], seed="bad", ops=3)
    stranger = tmp_path / "stranger.vhdx"
    vhdx.create(stranger, 16 * MiB).close()
    with unchanged(base, mid, top, stranger):
        with pytest.raises(VhdxError, match="not a differencing disk"):
            merge(base)
        with pytest.raises(ValueError, match="not in the chain"):
            merge(top, into=stranger)
        with pytest.raises(ValueError, match="child itself"):
            merge(top, into=top)


def test_interrupted_copy_is_completed_by_running_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], sector=4096, seed="resume", ops=40)
    before = content(child)
    real_write = merge_module.WritableEngine.write
    calls = {"n": 0}

    def failing_write(self, offset, data):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(5, "simulated I/O error")
        return real_write(self, offset, data)

    monkeypatch.setattr(merge_module.WritableEngine, "write", failing_write)
    with pytest.raises(OSError, match="simulated"):
        merge(child)
    monkeypatch.undo()
    # Half-merged: the target has G, the child accepts it through parent_linkage2, reads are intact.
    guid2 = uuid.UUID(locator(child)["parent_linkage2"].strip("{}"))
    assert uuid.UUID(data_write_guid(base)) == guid2
    assert content(child) == before
    result = merge(child)
    assert result.resumed and uuid.UUID(result.data_write_guid) == guid2
    assert content(base) == before
    assert not child.exists()


def test_step_one_alone_changes_nothing_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, mid, top = make_chain(tmp_path, ["base.vhdx", "mid.avhdx", "top.avhdx"], seed="step1")
    before = content(top)
    top_guid, mid_guid, base_guid = (data_write_guid(p) for p in (top, mid, base))

    def stop(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(merge_module, "_copy", stop)
    with pytest.raises(KeyboardInterrupt):
        merge(top, into=base)
    monkeypatch.undo()
    assert (data_write_guid(top), data_write_guid(mid), data_write_guid(base)) == (top_guid, mid_guid, base_guid)
    guid2 = locator(mid)["parent_linkage2"]
    assert uuid.UUID(guid2.strip("{}")).int != 0
    assert content(top) == before
    result = merge(top, into=base)
    assert "{" + result.data_write_guid + "}" == guid2.lower()
    assert content(base) == before


def test_zeroed_ranges_of_the_child_hide_the_parent(tmp_path: Path) -> None:
    base = tmp_path / "base.vhdx"
    with vhdx.create(base, 8 * MiB, block_size=2 * MiB) as d:
        d.pwrite(0, b"\xaa" * (8 * MiB))
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=base, block_size=MiB) as d:
        d.write_zeroes(2 * MiB, MiB)  # a whole child block: ZERO state
        d.discard(5 * MiB, MiB)  # UNMAPPED: reads zeros, not the parent
        d.write_zeroes(7 * MiB + 512, 1024)  # partial: sectors written with zeros
    before = content(child)
    assert before.count(0) == 2 * MiB + 1024
    result = merge(child)
    assert content(base) == before
    assert result.bytes_zeroed == 2 * MiB


def test_virtual_disk_items_follow_the_child(tmp_path: Path) -> None:
    base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="items", ops=5)
    new_id = uuid.uuid4()
    engine = open_engine(child, writable=True)
    try:
        md = dataclasses.replace(engine.image.metadata, virtual_disk_id=new_id, physical_sector_size=512)
        locator_bytes = build_parent_locator(list(md.parent_locator.entries))
        engine.stage_metadata(md, locator_bytes, visible=False)
        engine.flush()
    finally:
        engine.close()
    before = content(child)
    merge(child)
    with vhdx.open(base) as d:
        assert d.disk_id == new_id and d.physical_sector_size == 512
        assert d.read() == before


def test_progress_reports_the_whole_copy(tmp_path: Path) -> None:
    _base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="progress")
    seen = []
    result = merge(child, progress=seen.append)
    assert seen and seen[0].done == 0 and seen[-1].done == seen[-1].total
    assert seen[-1].total == result.bytes_read + result.bytes_zeroed
    assert all(p.operation == "merge" for p in seen)


def test_merge_hash_matches_after_further_writes(tmp_path: Path) -> None:
    """The merged target is an ordinary writable image afterwards (its allocator and BAT agree)."""
    base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="after")
    merge(child)
    with vhdx.open(base, "r+b") as d:
        scribble(d, random.Random(7), 20)
        expected = hashlib.sha256(d.pread(0, d.size)).hexdigest()
    assert digest(base) == expected
    _clean(base)


def test_hyperv_made_child_merges_into_its_parent(tmp_path: Path) -> None:
    """The Windows-made child of the shared fixtures (all five locator keys, a zero
    parent_linkage2) merged into the stand-in parent its locator names; the ground truth is the
    per-chunk digests recorded for the chain in expected.json."""
    (entry,) = [e for e in load_expected() if e.id == "dissect.hypervisor/differencing.avhdx+synthetic-parent"]
    child = copy_to(image_of(entry), tmp_path, entry.image_name)
    parent = copy_to(fixture_path(entry.parent_file, entry.parent_name_on_disk), tmp_path, entry.parent_name_on_disk)
    assert locator(child)["parent_linkage2"] == "{00000000-0000-0000-0000-000000000000}"
    result = merge(child)
    assert Path(result.target) == parent and not child.exists()
    data = json.loads((shared_fixtures_dir().parent / entry.chunks).read_text())
    chunk = int(data["chunk_size"])
    nonzero = {int(k): v for k, v in data["nonzero"].items()}
    zero = hashlib.sha256(bytes(chunk)).hexdigest()
    with vhdx.open(parent) as disk:
        touched = set(nonzero)
        for e in disk.extents():
            if e.state == "data":
                touched.update(range(e.virtual_offset // chunk, (e.virtual_offset + e.length - 1) // chunk + 1))
        for index in sorted(touched):
            assert hashlib.sha256(disk.pread(index * chunk, chunk)).hexdigest() == nonzero.get(index, zero), index
    _clean(parent)
