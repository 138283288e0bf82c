"""The journal (engine/journal.py) as the disk drives it, on in-memory images (BytesIO).

* The log is a ring: with a 1 MiB log, thousands of metadata changes flushed one by one go round
  it many times, without rotating the LogGuid, and at every point the file holds a log that a
  reader replays to exactly the acknowledged contents.
* A commit larger than the log is split into entries that each fit.
* Per flush, the number of entries and of syncs is bounded by the amount of metadata changed,
  not by the history of the session.
* A clean close leaves the log empty (LogGuid zero in both headers).

Oracles: a bytearray model of the writes; the log arithmetic of VHDX-FORMAT.md 10.1 (an entry
with d data sectors takes ceil((d + 2) / 128) + d log sectors); the log and headers as decoded by
``rawvhdx`` (written from the spec, independent of the library); the library's own read path for
replaying a snapshot (it is checked against real dirty-log images elsewhere).
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from rawvhdx import current_header, log_entries

import vhdx

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
LOG_SECTOR = 4 * KiB


def _entry_sectors(data_sectors: int) -> int:
    """Log sectors of one entry with ``data_sectors`` data descriptors (VHDX-FORMAT.md 10.1)."""
    return -(-(data_sectors + 2) // 128) + data_sectors


def _max_data_per_entry(log_length: int) -> int:
    capacity = log_length // LOG_SECTOR
    d = capacity
    while _entry_sectors(d) > capacity:
        d -= 1
    return d


def _in_memory(tmp_path: Path, name: str, size: int, **kwargs: object) -> io.BytesIO:
    """Create an image on disk, then hand back its bytes as a BytesIO (no fsync cost)."""
    path = tmp_path / name
    vhdx.create(path, size, **kwargs).close()  # type: ignore[arg-type]
    return io.BytesIO(path.read_bytes())


def _stats(disk: vhdx.VirtualDisk):  # type: ignore[no-untyped-def]
    return disk._engine.journal.stats


def _snapshot_reads(snapshot: bytes, parent: Path | None, ranges: list[tuple[int, int]]) -> list[bytes]:
    """Open a copy of the file as it is now, the way a reader would after a crash."""
    with vhdx.open(io.BytesIO(snapshot), parent=parent) as disk:
        assert disk.has_pending_log  # mid-session the log is live: LogGuid set, a sequence present
        return [disk.pread(o, n) for o, n in ranges]


def test_log_is_reused_circularly_across_thousands_of_flushes(tmp_path: Path) -> None:
    """A differencing child: each flush sets bits in two sector bitmap sectors (and rewrites a
    BAT sector), so each entry is several 4 KiB sectors. The journal never lets an entry straddle
    the end of the ring: when the next entry does not fit, it rotates the LogGuid (one header
    update) and starts again at offset 0."""
    parent = tmp_path / "parent.vhdx"
    parent_data = random.Random(5).randbytes(32 * MiB)
    with vhdx.create(parent, 32 * MiB, block_size=4 * MiB) as p:
        p.pwrite(0, parent_data)
    vhdx.create(tmp_path / "child.vhdx", parent=parent, block_size=MiB, log_size=MiB).close()
    bio = io.BytesIO((tmp_path / "child.vhdx").read_bytes())
    model = bytearray(parent_data)
    # Block 0's bits live in bitmap sector 0, block 16's in sector 1 (256 bitmap bytes per block).
    second = 16 * MiB
    flushes = 1500
    wrapped = 0
    rng = random.Random(9)
    with vhdx.open(bio, "r+b", parent=parent) as disk:
        for k in range(flushes):
            a, b = rng.randbytes(512), rng.randbytes(512)
            disk.pwrite(k * 512, a)
            disk.pwrite(second + k * 512, b)
            model[k * 512 : (k + 1) * 512] = a
            model[second + k * 512 : second + (k + 1) * 512] = b
            disk.flush()
            if k % 10 == 0:
                log = [e for e in log_entries(bio.getbuffer()) if e.checksum_ok
                       and e.log_guid == current_header(bio.getbuffer()[: 192 * KiB]).log_guid]
                assert log, f"flush {k}: no valid entry of the current LogGuid in the log"
                wrapped += any(e.log_offset + e.length > MiB for e in log)
            if k % 250 == 125:
                ranges = [(0, (k + 1) * 512 + 4096), (second, (k + 1) * 512 + 4096)]
                got = _snapshot_reads(bio.getvalue(), parent, ranges)
                assert got == [bytes(model[o : o + n]) for o, n in ranges], f"snapshot after flush {k}"
        stats = _stats(disk)
        assert stats.commits == flushes
        # Went round the 1 MiB ring many times ...
        assert stats.log_bytes > 10 * MiB
        # ... rotating the LogGuid once per trip round the ring (plus the session's first update).
        assert 10 <= stats.header_updates <= 2 + stats.log_bytes // MiB
        assert disk.read() == model
    assert wrapped == 0, "an entry straddled the end of the log"
    header = current_header(bio.getbuffer()[: 192 * KiB])
    assert header.log_guid.int == 0
    with vhdx.open(io.BytesIO(bio.getvalue()), parent=parent) as disk:
        assert not disk.has_pending_log
        assert disk.read() == model


def test_log_reuse_with_bat_only_changes(tmp_path: Path) -> None:
    """Thousands of BAT-only changes (whole blocks toggled between ZERO and UNMAPPED, in two BAT
    sectors far apart), flushed one by one through a 1 MiB log."""
    bio = _in_memory(tmp_path, "d.vhdx", 4 * GiB, block_size=MiB)
    with vhdx.open(bio, "r+b") as disk:
        disk.pwrite(0, b"keep me")
        for k in range(2000):
            # Blocks 1-500 and 2048-2547 (BAT sectors 0 and 4); each pass over them flips states.
            a, b = (1 + k % 500) * MiB, (2048 + k % 500) * MiB
            if (k // 500) % 2:
                disk.discard(a, MiB)
                disk.write_zeroes(b, MiB)
            else:
                disk.write_zeroes(a, MiB)
                disk.discard(b, MiB)
            disk.flush()
        stats = _stats(disk)
        assert stats.commits == 2000 and stats.entries == 2000
        assert stats.log_bytes >= 2000 * 3 * LOG_SECTOR  # 1 descriptor + 2 data sectors each
        # One update began the session; one more per trip round the 1 MiB ring.
        assert stats.header_updates <= 2 + stats.log_bytes // MiB
    with vhdx.open(io.BytesIO(bio.getvalue())) as disk:
        assert disk.pread(0, 7) == b"keep me"
        assert disk.pread(MiB, 4096) == bytes(4096)


@pytest.mark.parametrize("log_size", [MiB, 2 * MiB])
def test_commit_larger_than_the_log_is_split(tmp_path: Path, log_size: int) -> None:
    """One flush that changes more BAT sectors than one log entry can carry."""
    block = MiB
    size = 300 * GiB  # 307200 payload blocks: 601 BAT sectors of 512 entries
    bio = _in_memory(tmp_path, "big.vhdx", size, block_size=block, log_size=log_size)
    per_sector = LOG_SECTOR // 8
    with vhdx.open(bio, "r+b") as disk:
        disk.pwrite(size - 4096, b"tail")
        disk.pwrite(0, b"head")
        disk.flush()
        before = _stats(disk).entries, _stats(disk).syncs, _stats(disk).header_updates
        disk.write_zeroes(block, size - 2 * block)  # every block but the first and the last
        disk.flush()
        stats = _stats(disk)
        entries = stats.entries - before[0]
        # Which BAT sectors changed: those holding payload entries of blocks 1 .. n-2.
        g = size // block
        cr = (1 << 23) * 512 // block
        changed = {(b + b // cr) // per_sector for b in range(1, g - 1)}
        need = -(-len(changed) // _max_data_per_entry(log_size))
        assert entries >= need >= 2
        assert entries <= need + 1  # split as needed, not into crumbs
        # Syncs and header updates grow with the entries written, not with the blocks changed.
        header_updates = stats.header_updates - before[2]
        assert header_updates <= entries
        assert stats.syncs - before[1] <= 1 + 2 * entries + 2 * header_updates
    with vhdx.open(io.BytesIO(bio.getvalue())) as disk:
        assert disk.pread(0, 4) == b"head"
        assert disk.pread(size - 4096, 4) == b"tail"
        extents = list(disk.extents())
        assert [(e.virtual_offset, e.length) for e in extents if e.state == "zero"] == [
            (block, size - 2 * block)]


def test_entries_and_syncs_per_flush_are_bounded(tmp_path: Path) -> None:
    bio = _in_memory(tmp_path, "d.vhdx", 2 * GiB, block_size=MiB)
    with vhdx.open(bio, "r+b") as disk:
        stats = _stats(disk)
        disk.flush()  # nothing to do
        assert (stats.entries, stats.syncs, stats.header_updates) == (0, 0, 0)
        for k in range(200):
            e0, s0, h0 = stats.entries, stats.syncs, stats.header_updates
            disk.pwrite(k * MiB + 77, b"new block")  # allocates: one BAT sector changes
            disk.flush()
            assert stats.entries - e0 == 1
            # payload sync, log sync, in-place sync; plus the session's header update (2 syncs) once
            assert stats.syncs - s0 <= 3 + 2 * (stats.header_updates - h0)
            # the session's header update on the first flush, a LogGuid rotation when the ring is full
            assert stats.header_updates - h0 <= 1
        assert stats.header_updates <= 2 + stats.log_bytes // MiB
        e0, s0 = stats.entries, stats.syncs
        disk.pwrite(5 * MiB, b"in place")  # a present block: no metadata changes
        disk.flush()
        assert (stats.entries - e0, stats.syncs - s0) == (0, 1)
        e0, s0 = stats.entries, stats.syncs
        disk.flush()  # nothing new
        assert (stats.entries - e0, stats.syncs - s0) == (0, 0)
        # Many changes in one flush: one entry, the same few syncs.
        e0, s0 = stats.entries, stats.syncs
        for k in range(300, 500):
            disk.pwrite(k * MiB, b"x")
        disk.flush()
        assert stats.entries - e0 == 1
        assert stats.syncs - s0 <= 3


def test_clean_close_leaves_the_log_empty(tmp_path: Path) -> None:
    bio = _in_memory(tmp_path, "d.vhdx", 64 * MiB, block_size=MiB)
    disk = vhdx.open(bio, "r+b")
    disk.pwrite(3 * MiB, b"data")
    disk.write_zeroes(10 * MiB, MiB)
    disk.flush()
    assert current_header(bio.getbuffer()[: 192 * KiB]).log_guid.int != 0
    disk.pwrite(20 * MiB, b"unflushed")  # close flushes it
    disk.close()
    raw = bio.getvalue()
    h = current_header(raw[: 192 * KiB])
    assert h.log_guid.int == 0
    # Whatever stale entries remain carry an old LogGuid, so none of them is replayable.
    assert all(e.log_guid != h.log_guid for e in log_entries(raw))
    with vhdx.open(io.BytesIO(raw)) as reopened:
        assert not reopened.has_pending_log
        assert reopened.info().log_state == "empty"
        assert reopened.pread(20 * MiB, 9) == b"unflushed"
        assert reopened.pread(3 * MiB, 4) == b"data"
