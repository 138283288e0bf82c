"""stage_parent_locator: the reusable parent-locator edit (set-parent, merge)."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid

import pytest

import vhdx
from vhdx.disk import open_engine
from vhdx.errors import UnsupportedError
from vhdx.model.parent_locator import build_parent_locator
from vhdx.ops.parent_link import guid_text, locator_entries_with, stage_parent_locator

MiB = 1 << 20


def _digest(path, **kw) -> str:
    with vhdx.open(path, **kw) as d:
        return hashlib.sha256(d.read()).hexdigest()


def _chain(tmp_path):
    base = tmp_path / "base.vhdx"
    with vhdx.create(base, 8 * MiB, block_size=1 * MiB) as d:
        d.pwrite(0, os.urandom(3 * MiB))
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=base) as d:
        d.pwrite(MiB + 512, os.urandom(5000))
    grandchild = tmp_path / "grand.avhdx"
    with vhdx.create(grandchild, parent=child) as d:
        d.pwrite(4 * MiB, os.urandom(700))
    return base, child, grandchild


def _state(path):
    with vhdx.open(path, require_parent=False, ignore_id_mismatch=True) as d:
        info = d.info()
        engine = d._engine
        return dict(engine.image.metadata.parent_locator.entries), info.data_write_guid


def test_locator_entries_with_keeps_order_and_unknown_keys():
    entries = (("parent_linkage", "{a}"), ("x_unknown", "v"), ("parent_linkage2", "{b}"), ("volume_path", "p"))
    out = locator_entries_with(entries, {"parent_linkage": "{c}", "parent_linkage2": None, "volume_path": None,
                                         "relative_path": ".\\p.vhdx"})
    assert out == [("parent_linkage", "{c}"), ("x_unknown", "v"), ("relative_path", ".\\p.vhdx")]


def test_stage_linkage2_keeps_data_write_guid_and_grandchild_link(tmp_path):
    _base, child, grand = _chain(tmp_path)
    before_keys, before_guid = _state(child)
    digest = _digest(grand)
    new = uuid.uuid4()
    engine = open_engine(child, writable=True)
    try:
        stage_parent_locator(engine, linkage2=new)
        assert engine.journal.dirty  # staged, not flushed
        engine.flush()
    finally:
        engine.close()
    keys, guid = _state(child)
    assert guid == before_guid  # not a visible change
    assert keys["parent_linkage2"] == guid_text(new) == "{" + str(new).lower() + "}"
    assert {k: v for k, v in keys.items() if k != "parent_linkage2"} == {
        k: v for k, v in before_keys.items() if k != "parent_linkage2"}
    # The grandchild (linked to the child's DataWriteGuid) and the whole chain still open and read.
    assert _digest(grand) == digest
    with vhdx.open(child) as d:
        assert d.info().log_state == "empty"


def test_stage_linkage_and_removal_of_linkage2(tmp_path):
    _base, child, _grand = _chain(tmp_path)
    new = uuid.uuid4()
    engine = open_engine(child, writable=True)
    try:
        stage_parent_locator(engine, linkage=new, linkage2=None)
    finally:
        engine.close()  # close flushes
    keys, _ = _state(child)
    assert keys["parent_linkage"] == guid_text(new)
    assert "parent_linkage2" not in keys
    # The parent's DataWriteGuid no longer matches: the link check refuses it.
    with pytest.raises(vhdx.errors.ParentMismatchError):
        vhdx.open(child)


def test_stage_parent_path_after_move_drops_volume_path_keeps_unknown(tmp_path):
    base, child, _grand = _chain(tmp_path)
    digest = _digest(child)
    # Give the child a volume_path and an unknown key, as a Windows host might leave them.
    engine = open_engine(child, writable=True)
    try:
        entries = list(engine.image.metadata.parent_locator.entries)
        entries += [("volume_path", "\\\\?\\Volume{0000}\\old\\base.vhdx"), ("x_vendor", "keep me")]
        engine.stage_metadata(engine.image.metadata, build_parent_locator(entries), visible=False)
    finally:
        engine.close()
    _, guid_before = _state(child)
    moved = tmp_path / "store" / "deep"
    moved.mkdir(parents=True)
    new_base = moved / "renamed.vhdx"
    shutil.move(base, new_base)
    with pytest.raises(vhdx.errors.ParentNotFoundError):
        vhdx.open(child)
    engine = open_engine(child, writable=True, parent=new_base)  # linkage still matches
    try:
        stage_parent_locator(engine, parent_path=new_base)
        engine.flush()
    finally:
        engine.close()
    keys, guid = _state(child)
    assert guid == guid_before
    assert keys["relative_path"] == ".\\store\\deep\\renamed.vhdx"
    assert keys["absolute_win32_path"] == str(new_base.resolve()).replace("/", "\\")
    assert "volume_path" not in keys
    assert keys["x_vendor"] == "keep me"
    assert _digest(child) == digest  # found through the new locator, same contents


def test_identical_locator_writes_nothing(tmp_path):
    base, child, _grand = _chain(tmp_path)
    raw = child.read_bytes()
    keys, _ = _state(child)
    engine = open_engine(child, writable=True)
    try:
        stage_parent_locator(engine, parent_path=base, linkage2=uuid.UUID(keys["parent_linkage2"].strip("{}")))
        assert not engine.journal.in_session
    finally:
        engine.close()
    assert child.read_bytes() == raw


def test_not_differencing_is_refused(tmp_path):
    path = tmp_path / "a.vhdx"
    vhdx.create(path, 4 * MiB).close()
    engine = open_engine(path, writable=True)
    try:
        with pytest.raises(UnsupportedError):
            stage_parent_locator(engine, linkage=uuid.uuid4())
    finally:
        engine.close()
