"""Hidden data (``find_hidden``), the log history (``log_history``) and the case-file report, on
images whose history we made ourselves (so we know what must be found) and on real ones."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vhdx
from helpers import expected_params, image_of
from vhdx.constants import HEADER_1_OFFSET, HEADER_SIZE, REGION_TABLE_2_OFFSET
from vhdx.ops.forensics import find_hidden, forensic_report, log_history

MiB = 1 << 20


def _image_with_a_trimmed_block(tmp_path: Path) -> tuple[Path, int, bytes]:
    path = tmp_path / "t.vhdx"
    secret = random.Random(9).randbytes(300_000)
    with vhdx.create(path, 16 * MiB, block_size=1 * MiB) as d:
        d.pwrite(0, b"keep" * 1000)
        d.pwrite(5 * MiB + 4096, secret)
        d.flush()
        d.discard(5 * MiB, MiB)  # block 5 unmapped: its bytes stay in the file, unreferenced
        d.pwrite(9 * MiB, b"after")  # a block placed after it, so the leaked one is not at the end
    with vhdx.open(path) as d:
        assert d.pread(5 * MiB + 4096, len(secret)) == bytes(len(secret))
    return path, 5 * MiB + 4096, secret


def test_trimmed_block_is_found_and_dumped(tmp_path: Path) -> None:
    path, _, secret = _image_with_a_trimmed_block(tmp_path)
    raw = path.read_bytes()
    before = raw
    result = find_hidden(path, out_dir=tmp_path / "out", include_zero=False)
    hits = [r for r in result.regions if r.kind == "unreferenced" and r.nonzero]
    assert len(hits) == 1
    region = hits[0]
    assert region.nonzero_bytes == sum(1 for b in secret if b)
    assert raw[region.first_nonzero : region.first_nonzero + 64] == secret[: 64] or secret[0] == 0
    dumped = Path(region.dumped).read_bytes()
    assert secret in dumped
    assert dumped == raw[region.file_offset : region.file_offset + region.length]
    assert path.read_bytes() == before  # never written


def test_slack_and_reserved_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.vhdx"
    with vhdx.create(path, 8 * MiB, block_size=1 * MiB) as d:
        d.pwrite(0, b"x" * 512)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(HEADER_1_OFFSET + HEADER_SIZE + 100)  # past the checksummed 4 KiB: still a valid header
        f.write(b"hidden in header slot")
        f.seek(REGION_TABLE_2_OFFSET + 65536 + 10)  # the reserved tail of the header section
        f.write(b"\x01\x02\x03")
        f.seek(size + 2 * MiB)
        f.write(b"tail data")
    with vhdx.open(path) as d:
        assert d.pread(0, 512) == b"x" * 512  # still a valid image
    result = find_hidden(path, include_zero=False)
    by_structure = {r.structure: r for r in result.regions}
    slot = by_structure["header 1 slot after the header"]
    assert slot.nonzero_bytes == len(b"hidden in header slot".replace(b"\0", b""))
    assert slot.first_nonzero == HEADER_1_OFFSET + HEADER_SIZE + 100
    assert by_structure["reserved end of the header section"].nonzero_bytes == 3
    slack = [r for r in result.regions if r.kind == "slack" and r.nonzero]
    assert len(slack) == 1 and slack[0].first_nonzero == size + 2 * MiB


def test_allocation_cut_short_by_a_crash_is_found(tmp_path: Path) -> None:
    """A writer killed after writing a new block's payload but before committing its BAT entry
    leaves the bytes in the file with nothing pointing at them."""
    path = tmp_path / "c.vhdx"
    vhdx.create(path, 16 * MiB, block_size=1 * MiB).close()
    code = (
        "import os, sys, vhdx\n"
        "d = vhdx.open(sys.argv[1], 'r+b')\n"
        "d.pwrite(2 * 1024 * 1024, b'lost in a crash' * 100)\n"
        "os._exit(0)\n"  # no flush: the BAT change never reaches the file
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    with vhdx.open(path) as d:
        assert d.pread(2 * MiB, 1500) == bytes(1500)
    result = find_hidden(path, include_zero=False)
    found = [r for r in result.regions if r.nonzero]
    assert len(found) == 1
    assert found[0].nonzero_bytes == len((b"lost in a crash" * 100).replace(b"\0", b""))


def test_log_history_of_our_own_session(tmp_path: Path) -> None:
    path = tmp_path / "l.vhdx"
    with vhdx.create(path, 64 * MiB, block_size=1 * MiB) as d:
        pass
    with vhdx.open(path, "r+b") as d:
        for block in (7, 3, 40):
            d.pwrite(block * MiB, b"z" * 4096)
            d.flush()
    history = log_history(path)
    assert history.current_log_guid == "00000000-0000-0000-0000-000000000000"  # closed cleanly
    assert [e.sequence_number for e in history.entries] == [1, 2, 3]
    assert len({e.log_guid for e in history.entries}) == 1 and not any(e.active for e in history.entries)
    recorded = []
    for e in history.entries:
        blocks = {b["block"] for w in e.writes for b in w.bat_entries
                  if "block" in b and b["logged_state"] == "FULLY_PRESENT"}
        # Blocks allocated later show up as "then NOT_PRESENT, changed since".
        later = {b["block"] for w in e.writes for b in w.bat_entries if b.get("changed")}
        recorded.append((blocks, later))
        assert all(w.target == "BAT region" for w in e.writes)
    assert recorded == [({7}, {3, 40}), ({3, 7}, {40}), ({3, 7, 40}, set())]


DIRTY = expected_params(lambda e: e.log_needs_replay)


@pytest.mark.parametrize("e", DIRTY)
def test_dirty_log_fixtures_show_active_entries(e) -> None:
    history = log_history(image_of(e))
    active = [x for x in history.entries if x.active]
    assert active, "a log that needs replay has an active sequence"
    assert all(x.current_guid for x in active)
    seqs = [x.sequence_number for x in active]
    assert seqs == sorted(seqs) and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


@pytest.mark.parametrize("e", expected_params(lambda e: e.virtual_size <= (1 << 30))[:6])
def test_forensic_report_of_real_images(e) -> None:
    path = image_of(e)
    report = forensic_report(path)
    json.dumps(report)  # JSON-ready
    assert report["creator"] == e.creator
    assert report["virtual_size"] == e.virtual_size
    assert report["file"]["size"] == os.path.getsize(path)
    valid = [h for h in report["headers"] if h["valid"]]
    assert valid and sum(h.get("current", False) for h in valid) == 1
    assert isinstance(report["check"]["findings"], list)


def test_forensic_report_of_a_chain_records_the_locator(tmp_path: Path) -> None:
    base = tmp_path / "base.vhdx"
    vhdx.create(base, 8 * MiB).close()
    child = tmp_path / "child.avhdx"
    vhdx.create(child, parent=base).close()
    shutil.move(base, tmp_path / "moved.vhdx")  # the parent is gone: still reported
    report = forensic_report(child)
    entries = report["parent_locator"]["entries"]
    assert entries["relative_path"].endswith("base.vhdx")
    assert report["disk_type"] == "differencing"
