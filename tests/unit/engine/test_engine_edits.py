"""In-place structural edits of WritableEngine: metadata region, region table, truncation."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid

import vhdx
from vhdx.disk import open_engine
from vhdx.model.region_table import RegionTable

MiB = 1 << 20


def _digest(path) -> str:
    with vhdx.open(path) as d:
        return hashlib.sha256(d.read()).hexdigest()


def test_stage_metadata_changes_only_what_was_asked(tmp_path):
    path = tmp_path / "a.vhdx"
    with vhdx.create(path, 8 * MiB, block_size=1 * MiB) as d:
        d.pwrite(MiB, b"x" * 5000)
    before = _digest(path)
    with vhdx.open(path) as d:
        old_guid = d.info().data_write_guid
    new_id = uuid.uuid4()
    engine = open_engine(path, writable=True)
    try:
        md = dataclasses.replace(engine.image.metadata, virtual_disk_id=new_id, physical_sector_size=512)
        engine.stage_metadata(md, None, visible=False)
        engine.flush()
    finally:
        engine.close()
    with vhdx.open(path) as d:
        assert d.disk_id == new_id
        assert d.physical_sector_size == 512
        info = d.info()
    assert info.data_write_guid == old_guid  # not a visible change: children stay linked
    assert info.log_state == "empty"
    assert _digest(path) == before


def test_stage_metadata_keeps_unknown_items_and_no_op_writes_nothing(tmp_path):
    path = tmp_path / "a.vhdx"
    vhdx.create(path, 4 * MiB).close()
    raw = path.read_bytes()
    engine = open_engine(path, writable=True)
    try:
        engine.stage_metadata(engine.image.metadata, None, visible=True)  # same contents
        assert not engine.journal.in_session
    finally:
        engine.close()
    assert path.read_bytes() == raw


def test_stage_region_table_moves_nothing_when_identical_and_truncate_file(tmp_path):
    path = tmp_path / "a.vhdx"
    with vhdx.create(path, 8 * MiB, block_size=1 * MiB) as d:
        d.pwrite(0, b"y" * MiB)
    before = _digest(path)
    engine = open_engine(path, writable=True)
    try:
        table = RegionTable(tuple(engine.image.region_table.entries))
        engine.stage_region_table(table)
        end = engine.allocator.end
        engine.source.truncate(end + 3 * MiB)  # trailing space nothing references
        engine.truncate_file(end)
        assert engine.source.size() == end
    finally:
        engine.close()
    with vhdx.open(path) as d:
        assert d.info().log_state == "empty"
    assert _digest(path) == before
