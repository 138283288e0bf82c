"""Crash consistency, proven on recorded workloads (issue: journaled writes).

A random workload (writes of any alignment, zeroing, discards, flushes, close and reopen) runs
against a RecordingFile. From the recording, crash states are built: all writes before a barrier,
plus any subset of the writes issued after it, in any order, some torn. Every crash state must
(a) open read-only with the log replayed in memory and (b) open read-write with the log replayed
on disk, giving an image that passes our structural checks (and ``qemu-img check`` for images
QEMU can open), in which every byte acknowledged by a completed flush() reads back and every other
sector holds its old or a newer version, never anything else.

VHDX_CRASH_STATES (default 2000 in all) sets how many crash states are tried.
"""

from __future__ import annotations

import io
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import vhdx
from helpers import require_tool

from .recording import crash_state, window_bases, windows
from .workload import check_contents, expected_for_window, run_workload

TOTAL_STATES = int(os.environ.get("VHDX_CRASH_STATES", "2000"))
MiB = 1 << 20

# (name, create kwargs, steps, share of the crash states)
CONFIGS = [
    ("dynamic-512", dict(size=4 * MiB, block_size=1 * MiB), 70, 0.3),
    ("dynamic-4096", dict(size=4 * MiB, block_size=1 * MiB, logical_sector_size=4096), 50, 0.15),
    ("fixed-512", dict(size=4 * MiB, block_size=1 * MiB, disk_type="fixed"), 50, 0.2),
    ("differencing-512", dict(block_size=1 * MiB), 70, 0.35),
]


def _make(tmp: Path, name: str, kwargs: dict, rng: random.Random) -> tuple[Path, str | None]:
    image = tmp / f"{name}.vhdx"
    parent = None
    if name.startswith("differencing"):
        parent_path = tmp / f"{name}-parent.vhdx"
        with vhdx.create(parent_path, 4 * MiB, block_size=2 * MiB) as p:
            for _ in range(20):
                off = rng.randrange(0, p.size - 65536)
                p.pwrite(off, rng.randbytes(rng.randrange(1, 65536)))
        parent = str(parent_path)
        vhdx.create(image, parent=parent, **kwargs).close()
    else:
        kwargs = dict(kwargs)
        size = kwargs.pop("size")
        vhdx.create(image, size, **kwargs).close()
    return image, parent


def _check_state(frozen: bytes, parent: str | None, ack: bytes, later: list, sector_size: int, scratch: Path,
                 where: str, *, qemu: bool) -> None:
    # (a) read-only, log replayed in memory; the bytes given are never written.
    with vhdx.open(io.BytesIO(frozen), parent=parent) as disk:
        problem = check_contents(disk.read(), ack, later, sector_size)
    assert problem is None, f"{where}, read-only: {problem}"

    # (b) read-write: the log is replayed on disk; the image is then clean and consistent.
    path = scratch / "state.vhdx"
    path.write_bytes(frozen)
    with vhdx.open(path, "r+b", parent=parent):
        pass
    with vhdx.open(path, parent=parent) as disk:
        assert not disk.has_pending_log, where
        problem = check_contents(disk.read(), ack, later, sector_size)
        info = disk.info()
    assert problem is None, f"{where}, after on-disk replay: {problem}"
    assert info.log_state == "empty", f"{where}: log not empty after a clean close ({info.log_state})"
    if qemu:
        rc, out = _qemu_check(path)
        # 0: clean; 3: leaked clusters only (space allocated by writes that never reached the BAT
        # before the crash: harmless by design, reclaimed by compaction).
        assert rc in (0, 3), f"{where}: qemu-img check failed ({rc}): {out}"


def _qemu_check(path: Path) -> tuple[int, str]:
    r = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(path)], capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


@pytest.mark.parametrize("name,kwargs,steps,share", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_crash_states(tmp_path: Path, name: str, kwargs: dict, steps: int, share: float) -> None:
    qemu = not name.startswith("differencing") and "4096" not in name
    if qemu:
        require_tool("qemu-img")
    rng = random.Random(f"crash-{name}")
    image, parent = _make(tmp_path, name, kwargs, rng)
    recording = run_workload(image, rng, steps=steps, parent=parent)
    ops = recording.rec.ops
    spans = windows(ops)
    states = max(1, int(TOTAL_STATES * share))
    work = Path(os.environ.get("VHDX_CRASH_TMP", "/dev/shm" if os.path.isdir("/dev/shm") else tmp_path))
    scratch = Path(tempfile.mkdtemp(prefix="vhdx-crash-", dir=work))
    try:
        per_window = max(1, -(-states // len(spans)))
        done = 0
        for window, base in window_bases(recording.initial_file, ops):
            end_op = spans[window][1]
            ack, later = expected_for_window(recording, window, end_op)
            for j in range(per_window):
                seed = rng.randrange(1 << 30)
                state = crash_state(base, ops, window, random.Random(seed), tear=recording.sector_size)
                where = f"{name}: crash in window {window}/{len(spans)} (seed {seed})"
                _check_state(bytes(state), parent, ack, later, recording.sector_size, scratch, where,
                             qemu=qemu and (j == 0 or window == len(spans) - 1))
                done += 1
        assert done >= states
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # The recording itself must end in the final model.
    with vhdx.open(io.BytesIO(bytes(recording.rec.data)), parent=parent) as disk:
        assert disk.read() == recording.final_disk
