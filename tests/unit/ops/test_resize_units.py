"""Small pieces of the resize operation: relative size parsing, and the journal hooks it relies
on to land a change in one log entry (or give up before committing anything)."""

from __future__ import annotations

import pytest

import vhdx
from vhdx._units import parse_size
from vhdx.disk import open_engine
from vhdx.engine.journal import entry_sectors
from vhdx.ops.resize import resolve_size

MiB, GiB = 1 << 20, 1 << 30


@pytest.mark.parametrize("text,current,expected", [
    ("10G", 5, 10 * GiB),
    ("+10G", 64 * MiB, 64 * MiB + 10 * GiB),
    ("-1G", 3 * GiB, 2 * GiB),
    (" +512 ", 1024, 1536),
    ("-64M", 64 * MiB, 0),  # zero here; resize() itself refuses it
])
def test_resolve_size(text, current, expected):
    assert resolve_size(text, current, parse_size) == expected


@pytest.mark.parametrize("text", ["-2G", "+x", "", "--1G"])
def test_resolve_size_errors(text):
    with pytest.raises(ValueError):
        resolve_size(text, GiB, parse_size)


def test_journal_counts_and_discards_staged_sectors(tmp_path):
    path = tmp_path / "a.vhdx"
    vhdx.create(path, 8 * MiB, block_size=MiB).close()
    raw = path.read_bytes()
    engine = open_engine(path, writable=True)
    try:
        journal = engine.journal
        assert journal.staged_log_sectors() == entry_sectors(0)
        journal.begin(visible=False)
        bat = engine.image.region_table.bat.file_offset
        journal.stage(bat, b"\x01" * 8)
        journal.stage(bat + 8192, bytes(4096))
        journal.stage_zero(bat + 65536, 65536)
        assert journal.staged_log_sectors() == entry_sectors(2, 1)
        assert journal.staged_log_sectors(3, 2) == entry_sectors(5, 3)
        journal.discard()
        assert not journal.dirty and journal.staged_log_sectors() == entry_sectors(0)
    finally:
        engine.close()
    # Only the headers changed (session begun and closed); the BAT region is untouched.
    after = path.read_bytes()
    assert after[bat : bat + 128 * 1024] == raw[bat : bat + 128 * 1024]
    with vhdx.open(path) as d:
        assert d.info().log_state == "empty"
