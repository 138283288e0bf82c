"""Crash consistency of ``vhdx.ops.resize``: a power cut at any moment leaves either the old disk
(old size, old content) or the new one (new size, the old content's prefix, zeros after it), and
nothing else.

Each resize runs against a RecordingFile. From the recording, crash states are built (everything
before a barrier, plus any subset of the writes issued after it, in any order, some torn). Every
state must (a) open read-only with the log replayed in memory and read exactly the old or the new
disk, (b) open read-write (log replayed on disk) and read the same disk, with the log empty
afterwards and no corruption found by our check (leaks are allowed: space written before a crash
and never referenced) nor by ``qemu-img check`` where qemu can open it, and (c) for one state in
some windows, resize again to the new size from there and read the new disk.

The scenarios: a grow that relocates the BAT and zeroes the stale tail of a partial last block; a
forced shrink that frees blocks at the end of the file and truncates it; a fixed grow (new blocks
preallocated, BAT entries in place); a fixed shrink with 4096-byte sectors.

VHDX_CRASH_RESIZE_STATES (default 240 in all) sets how many crash states are tried.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import vhdx
from craft import patch, read_layout
from helpers import require_tool
from vhdx.ops import check, resize

from .recording import RecordingFile, crash_state, window_bases, windows

TOTAL_STATES = int(os.environ.get("VHDX_CRASH_RESIZE_STATES", "240"))
MiB, GiB = 1 << 20, 1 << 30


@dataclass(frozen=True)
class Scenario:
    name: str
    disk_type: str
    sector: int
    size: int  # created with this size and filled with data
    old_size: int  # shrunk (with force) to this size before the recording: stale bytes past it
    new_size: int  # the recorded resize
    share: float


SCENARIOS = [
    # 1 MiB blocks: past 128 GiB the BAT outgrows its 1 MiB region (VHDX-FORMAT.md 8.6).
    Scenario("grow-relocate", "dynamic", 512, 8 * MiB, 7 * MiB + MiB // 2, 200 * GiB, 0.35),
    Scenario("shrink-truncate", "dynamic", 512, 8 * MiB, 8 * MiB, 3 * MiB + 512, 0.25),
    Scenario("fixed-grow", "fixed", 512, 6 * MiB, 5 * MiB + 4096, 12 * MiB, 0.25),
    Scenario("fixed-shrink-4096", "fixed", 4096, 8 * MiB, 8 * MiB, 2 * MiB + 4096, 0.15),
]


def _build(tmp: Path, s: Scenario) -> tuple[bytes, bytes]:
    """The image before the recorded resize (file bytes) and its disk content."""
    path = tmp / f"{s.name}.vhdx"
    rng = np.random.default_rng(sum(map(ord, s.name)))
    with vhdx.create(path, s.size, block_size=MiB, logical_sector_size=s.sector, disk_type=s.disk_type) as d:
        for b in range(s.size // MiB):  # in order: the blocks lie in the file as on the disk
            d.pwrite(b * MiB, rng.bytes(MiB))
    if s.old_size != s.size:
        resize(path, s.old_size, force=True)
        # Stale bytes in the cut block past the old end (the shrink zeroed them; another tool's
        # might not have): a grow must not expose them.
        cut = s.old_size // MiB
        if s.old_size % MiB:
            used = s.old_size % MiB
            patch(path, read_layout(path).block_file_offset(cut) + used, b"\x5c" * (MiB - used))
    with vhdx.open(path) as d:
        content = d.read()
    assert len(content) == s.old_size
    return path.read_bytes(), content


def _reads_as(disk: vhdx.VirtualDisk, old: bytes, new_size: int) -> str | None:
    """Why ``disk`` is neither the old disk nor the new one (None when it is one of them)."""
    if disk.size == len(old):
        return None if disk.read() == old else "old size but not the old content"
    if disk.size != new_size:
        return f"size {disk.size} is neither {len(old)} nor {new_size}"
    keep = min(len(old), new_size)
    if disk.pread(0, keep) != old[:keep]:
        return "new size but the old content's prefix differs"
    if new_size > len(old):
        # The new range reads zero: every stored run in it, and the start of it, is read.
        tail = min(MiB, new_size - keep)
        if disk.pread(keep, tail) != bytes(tail):
            return f"the new range does not start with zeros (at 0x{keep:x})"
        for e in disk.extents(keep, new_size - keep):
            if e.state == "data" and disk.pread(e.virtual_offset, e.length) != bytes(e.length):
                return f"non-zero bytes in the new range at 0x{e.virtual_offset:x}"
    return None


def _qemu_check(path: Path) -> tuple[int, str]:
    r = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(path)], capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


@pytest.mark.parametrize("s", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_crash_during_resize(tmp_path: Path, s: Scenario) -> None:
    qemu = s.sector == 512
    if qemu:
        require_tool("qemu-img")
    initial, old = _build(tmp_path, s)
    rec = RecordingFile(initial, name=f"{s.name}.vhdx")
    result = resize(rec, s.new_size, force=True)
    assert result.bat_relocated == (s.name == "grow-relocate")
    if s.name == "grow-relocate":
        assert result.bytes_written == MiB // 2  # the stale half block past the old end
    if s.new_size < s.old_size:
        assert result.blocks_freed and len(rec.data) < len(initial)
    with vhdx.open(io.BytesIO(bytes(rec.data))) as disk:
        assert disk.size == s.new_size
        assert _reads_as(disk, old, s.new_size) is None

    ops = rec.ops
    spans = windows(ops)
    assert len(spans) > 5, "the recording should have several barriers"
    rng = random.Random(f"resize-{s.name}")
    states = max(1, int(TOTAL_STATES * s.share))
    per_window = max(1, -(-states // len(spans)))
    work = Path(os.environ.get("VHDX_CRASH_TMP", "/dev/shm" if os.path.isdir("/dev/shm") else tmp_path))
    scratch = Path(tempfile.mkdtemp(prefix="vhdx-crash-resize-", dir=work))
    seen_sizes: set[int] = set()
    tried = 0
    try:
        path = scratch / "state.vhdx"
        for window, base in window_bases(initial, ops):
            for j in range(per_window):
                seed = rng.randrange(1 << 30)
                state = bytes(crash_state(base, ops, window, random.Random(seed), tear=s.sector))
                where = f"{s.name}: crash in window {window}/{len(spans)} (seed {seed})"
                # (a) read-only: the log replayed in memory, the state itself never written.
                with vhdx.open(io.BytesIO(state)) as disk:
                    problem = _reads_as(disk, old, s.new_size)
                    seen_sizes.add(disk.size)
                assert problem is None, f"{where}, read-only: {problem}"
                # (b) read-write: the log replayed on disk, then a consistent image.
                path.write_bytes(state)
                with vhdx.open(path, "r+b"):
                    pass
                with vhdx.open(path) as disk:
                    assert not disk.has_pending_log, where
                    problem = _reads_as(disk, old, s.new_size)
                    assert disk.info().log_state == "empty", where
                assert problem is None, f"{where}, after replay: {problem}"
                if j == 0 or window == len(spans) - 1:
                    report = check(path)
                    assert report.corruptions == 0 and not report.check_errors, \
                        f"{where}: {[f.message for f in report.findings if f.severity == 'error']}"
                    if qemu:
                        rc, out = _qemu_check(path)
                        assert rc in (0, 3), f"{where}: qemu-img check failed ({rc}): {out}"
                # (c) the resize can be done (again) from any state.
                if j == 0 and window % 3 == 1:
                    resize(path, s.new_size, force=True)
                    with vhdx.open(path) as disk:
                        assert disk.size == s.new_size, where
                        assert _reads_as(disk, old, s.new_size) is None, f"{where}, resized again"
                tried += 1
        assert tried >= states
        # Both outcomes were met: the cut points cover the commit.
        assert seen_sizes == {s.old_size, s.new_size}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
