"""Crash consistency of ``vhdx.ops.compact``: a power cut at any moment leaves an image that reads
exactly what it read before the compaction started.

Compaction runs against a RecordingFile (small move batches, so there are several commits).
From the recording, crash states are built (everything before a barrier, plus any subset of the
writes issued after it, in any order, some torn). Every state must (a) open read-only with the
log replayed in memory and read the original content, (b) open read-write (log replayed on disk)
and read the original content with the log empty afterwards, and pass ``qemu-img check`` (leaks
allowed: a crash between a copy and its commit leaves an unreferenced copy) where qemu can open
it, and (c) for one state in every third window (and the last), compact to the end from there
and still read the same.

VHDX_CRASH_COMPACT_STATES (default 120 in all) sets how many crash states are tried.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import vhdx
from craft import patch, read_layout
from helpers import require_tool
from vhdx.constants import BAT_STATE_MASK

from .recording import RecordingFile, crash_state, window_bases, windows

TOTAL_STATES = int(os.environ.get("VHDX_CRASH_COMPACT_STATES", "120"))
MiB = 1 << 20
compact_module = importlib.import_module("vhdx.ops.compact")

# (name, logical sector size, differencing, share of the crash states)
CONFIGS = [
    ("dynamic-512", 512, False, 0.4),
    ("dynamic-4096", 4096, False, 0.2),
    ("differencing-512", 512, True, 0.4),
]


def _build(tmp: Path, name: str, sector: int, differencing: bool) -> tuple[Path, str | None]:
    """An image with every kind of work for compaction: all-zero blocks, trimmed and zeroed
    blocks (leaks), blocks to move; for the differencing one also partially present blocks whose
    bits are then cleared (they become NOT_PRESENT and the chunk's sector bitmap block is freed,
    its space then reused by a move)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    size = 16 * MiB
    parent = None
    image = tmp / f"{name}.vhdx"
    if differencing:
        parent_path = tmp / f"{name}-parent.vhdx"
        with vhdx.create(parent_path, size, block_size=2 * MiB, logical_sector_size=sector) as p:
            p.pwrite(0, rng.bytes(size))
        parent = str(parent_path)
        disk = vhdx.create(image, parent=parent, block_size=MiB)
    else:
        disk = vhdx.create(image, size, block_size=MiB, logical_sector_size=sector)
    with disk:
        for i, b in enumerate(rng.permutation(16).tolist()):
            kind = i % 5
            if kind == 0:
                disk.pwrite(b * MiB, bytes(MiB))  # allocated, all zero
            elif kind == 1 and differencing:
                disk.pwrite(b * MiB + 4096, rng.bytes(3 * sector))  # partially present
            else:
                disk.pwrite(b * MiB, rng.bytes(MiB))
        disk.discard(3 * MiB, 2 * MiB)
        disk.write_zeroes(9 * MiB, MiB)
    if differencing:
        layout = read_layout(image)
        g = layout.geometry
        sb = int(layout.bat[g.bitmap_bat_index(0)]) & ~BAT_STATE_MASK
        assert sb, "the builder meant to make a sector bitmap block"
        patch(image, sb, bytes(MiB))  # no sector of any partially present block is in the child
    return image, parent


def _content(data: bytes | bytearray, parent: str | None) -> str:
    with vhdx.open(io.BytesIO(bytes(data)), parent=parent) as disk:
        return hashlib.sha256(disk.read()).hexdigest()


def _qemu_check(path: Path) -> tuple[int, str]:
    r = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(path)], capture_output=True, text=True)
    return r.returncode, (r.stdout + r.stderr).strip()


@pytest.mark.parametrize("name,sector,differencing,share", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_crash_during_compact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, sector: int,
                              differencing: bool, share: float) -> None:
    qemu = not differencing and sector == 512
    if qemu:
        require_tool("qemu-img")
    monkeypatch.setattr(compact_module, "MOVE_BATCH", MiB)  # one commit per move
    image, parent = _build(tmp_path, name, sector, differencing)
    initial = image.read_bytes()
    original = _content(initial, parent)

    rec = RecordingFile(initial, name=str(image))
    result = compact_module.compact(rec, parent=parent)
    assert result.blocks_freed and result.blocks_moved and result.bytes_reclaimed
    if differencing:
        assert result.sector_bitmap_blocks_freed == 1
    assert _content(rec.data, parent) == original
    assert len(rec.data) < len(initial)

    ops = rec.ops
    spans = windows(ops)
    rng = random.Random(f"compact-{name}")
    states = max(1, int(TOTAL_STATES * share))
    per_window = max(1, -(-states // len(spans)))
    work = Path(os.environ.get("VHDX_CRASH_TMP", "/dev/shm" if os.path.isdir("/dev/shm") else tmp_path))
    scratch = Path(tempfile.mkdtemp(prefix="vhdx-crash-compact-", dir=work))
    tried = 0
    try:
        path = scratch / "state.vhdx"
        for window, base in window_bases(initial, ops):
            for j in range(per_window):
                seed = rng.randrange(1 << 30)
                state = bytes(crash_state(base, ops, window, random.Random(seed), tear=sector))
                where = f"{name}: crash in window {window}/{len(spans)} (seed {seed})"
                # (a) read-only: the log replayed in memory, the state itself never written.
                assert _content(state, parent) == original, f"{where}, read-only"
                # (b) read-write: the log replayed on disk, then a clean image.
                path.write_bytes(state)
                with vhdx.open(path, "r+b", parent=parent):
                    pass
                with vhdx.open(path, parent=parent) as disk:
                    assert not disk.has_pending_log, where
                    assert hashlib.sha256(disk.read()).hexdigest() == original, f"{where}, after replay"
                    assert disk.info().log_state == "empty", where
                if qemu and (j == 0 or window == len(spans) - 1):
                    rc, out = _qemu_check(path)
                    assert rc in (0, 3), f"{where}: qemu-img check failed ({rc}): {out}"
                # (c) compaction resumes from any state and finishes the job.
                if j == 0 and (window % 3 == 0 or window == len(spans) - 1):
                    compact_module.compact(path, parent=parent)
                    with vhdx.open(path, parent=parent) as disk:
                        assert hashlib.sha256(disk.read()).hexdigest() == original, f"{where}, compacted again"
                    assert path.stat().st_size <= len(initial), where
                tried += 1
        assert tried >= states
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
