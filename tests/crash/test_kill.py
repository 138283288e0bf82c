"""Process kills: SIGKILL a writing process at random moments, then reopen.

Every write acknowledged by a completed flush() must read back; every other sector holds its
old contents or a version a later step wrote. The image must open read-only (log replayed in
memory) and read-write (replayed on disk), and pass qemu-img check.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vhdx
from helpers import require_tool

from .plan import make_plan
from .workload import Event, check_contents

MiB = 1 << 20
KILLS = int(os.environ.get("VHDX_KILL_RUNS", "12"))
# Long enough that a kill within the first half second lands mid-work even on a fast, idle machine.
STEPS = 4000


def _expected(base: bytes, plan: list, acks: int, sector: int) -> tuple[bytes, list[Event]]:
    model = bytearray(base)
    flushes = 0
    ack_state = bytes(model) if acks == 0 else None
    later: list[Event] = []
    for step in plan:
        if step.kind == "flush":
            flushes += 1
            if flushes == acks:
                ack_state = bytes(model)
            if flushes > acks + 1:
                # The worker prints ACK right after each flush returns, so it cannot have gone past
                # the flush after the last ACK it printed (it may have died before printing it).
                break
            continue
        if step.kind == "write":
            model[step.offset : step.offset + step.length] = step.data
        else:
            model[step.offset : step.offset + step.length] = bytes(step.length)
        if flushes >= acks and ack_state is not None:
            lo = (step.offset // sector) * sector
            hi = -(-(step.offset + step.length) // sector) * sector
            later.append(Event("write", step.offset, step.length, after=bytes(model[lo:hi])))
    assert ack_state is not None
    return ack_state, later


@pytest.mark.parametrize("kind", ["dynamic", "differencing"])
def test_sigkill(tmp_path: Path, kind: str) -> None:
    require_tool("qemu-img")
    rng = random.Random(f"kill-{kind}")
    size, sector = 8 * MiB, 512
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    interrupted = 0
    for run in range(KILLS):
        image = tmp_path / f"{kind}-{run}.vhdx"
        parent = None
        if kind == "differencing":
            parent_path = tmp_path / f"parent-{run}.vhdx"
            with vhdx.create(parent_path, size, block_size=2 * MiB) as p:
                p.pwrite(0, rng.randbytes(size // 2))
            parent = str(parent_path)
            vhdx.create(image, parent=parent, block_size=1 * MiB).close()
        else:
            vhdx.create(image, size, block_size=1 * MiB).close()
        with vhdx.open(image, parent=parent) as d:
            base = d.read()
        seed = rng.randrange(1 << 30)
        plan = make_plan(seed, size, sector, STEPS)
        args = [sys.executable, "-m", "crash.kill_worker", str(image), str(seed), str(size), str(sector), str(STEPS)]
        proc = subprocess.Popen(args + ([parent] if parent else []), stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()
        proc.wait()
        acks = sum(1 for line in out.splitlines() if line.startswith("ACK"))
        interrupted += "DONE" not in out
        ack, later = _expected(base, plan, acks, sector)
        with vhdx.open(image, parent=parent) as d:
            problem = check_contents(d.read(), ack, later, sector)
        assert problem is None, f"run {run} (seed {seed}, {acks} acks), read-only: {problem}"
        with vhdx.open(image, "r+b", parent=parent):
            pass
        with vhdx.open(image, parent=parent) as d:
            problem = check_contents(d.read(), ack, later, sector)
            assert d.info().log_state == "empty"
        assert problem is None, f"run {run} (seed {seed}, {acks} acks), after replay: {problem}"
        if kind == "dynamic":
            r = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(image)], capture_output=True, text=True)
            assert r.returncode in (0, 3), r.stdout + r.stderr
    # The kills must really land in the middle of the work, or this test proves nothing.
    assert interrupted >= KILLS // 2, f"only {interrupted} of {KILLS} runs were killed before finishing"
