"""Helpers shared by the side-by-side benchmarks (compare_read.py, compare_write.py, compare_convert.py).

Plain functions only, no state: size parsing and printing, running the peer tools and timing them,
warming the page cache, choosing a work folder, and the result table every script prints. The
scripts are run as ``python benchmarks/compare_X.py``, so they find this module by putting their
own folder on sys.path first (see the top of each script); it is not part of the package.

Importing it also makes ``import vhdx`` work from a checkout without an installed package: when
no vhdx package can be found, the checkout's src/ goes on sys.path.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

PEER = "(it is the peer being compared against)"

if importlib.util.find_spec("vhdx") is None:  # running from a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


# --- sizes ---------------------------------------------------------------------------------------------
def parse_size(text: str) -> int:
    """``"2G"``, ``"1.5 GiB"``, ``"32M"``, ``"4096"`` ... as bytes (binary units)."""
    units = {"K": KiB, "M": MiB, "G": GiB, "T": TiB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def human(n: float) -> str:
    """A byte count in the largest binary unit it reaches: ``2 GiB``, ``1.5 MiB``, ``512 B``."""
    for unit, div in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div:
            return f"{n / div:g} {unit}"
    return f"{n:g} B"


# --- the peer tools ------------------------------------------------------------------------------------
def need_tool(name: str, prog: str, why: str = PEER) -> str:
    """The path of the program ``name``; without one, exit with "<prog>: <name> is required <why>"."""
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{prog}: {name} is required {why}")
    return path


def run(cmd: list[str], *, stdin: Path | None = None, check: bool = True,
        text: bool = False) -> subprocess.CompletedProcess[Any]:
    """Run ``cmd`` to the end with its output captured; stdin from the file ``stdin`` or /dev/null.
    ``check`` raises CalledProcessError on a non-zero exit; ``text`` decodes the output."""
    with open(stdin if stdin is not None else os.devnull, "rb") as fh:
        return subprocess.run(cmd, check=check, stdin=fh, capture_output=True, text=text)


def timed_cmd(cmd: list[str], *, stdin: Path | None = None, prog: str | None = None) -> float:
    """Wall time of a whole process (start-up included); stdin from the file ``stdin`` or /dev/null,
    stdout discarded. A failure raises CalledProcessError, or with ``prog`` exits with
    "<prog>: <cmd> failed: <its stderr>"."""
    with open(stdin if stdin is not None else os.devnull, "rb") as fh:
        t = time.perf_counter()
        done = subprocess.run(cmd, stdin=fh, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        secs = time.perf_counter() - t
    if done.returncode != 0:
        if prog is not None:
            sys.exit(f"{prog}: {' '.join(cmd)} failed: {done.stderr.decode(errors='replace').strip()}")
        raise subprocess.CalledProcessError(done.returncode, cmd, None, done.stderr)
    return secs


# --- files and folders ---------------------------------------------------------------------------------
def warm(path: Path, chunk: int = 16 * MiB) -> None:
    """Read the whole file once so that every contender reads it from the page cache. The holes of
    a sparse file are skipped (where the OS has SEEK_DATA): they hold nothing to cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = memoryview(bytearray(chunk))
        off = 0
        if hasattr(os, "SEEK_DATA"):
            end = os.fstat(fd).st_size
            while off < end:
                try:
                    start = os.lseek(fd, off, os.SEEK_DATA)
                except OSError:
                    break
                stop = os.lseek(fd, start, os.SEEK_HOLE)
                while start < stop:
                    start += os.preadv(fd, [buf[: min(chunk, stop - start)]], start) or (stop - start)
                off = stop
        else:
            while os.preadv(fd, [buf], off) > 0:
                off += chunk
    finally:
        os.close(fd)


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, file system type) holding ``path``, from /proc/mounts when there is one."""
    best = ("?", "?")
    try:
        with open("/proc/mounts") as fh:
            mounts = [line.split()[1:3] for line in fh]
    except OSError:
        return best
    real = os.path.realpath(path)
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, fstype)
    return best


def pick_dir(requested: Path | None, need: int) -> Path:
    """--dir, else /dev/shm when it has room for every file of the run, else /tmp."""
    if requested is not None:
        return requested
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= need:
        return shm
    return Path(tempfile.gettempdir())


def work_base(requested: Path | None, need: int, prog: str) -> Path:
    """pick_dir, created if missing; exit with a message when it has less than ``need`` bytes free."""
    base = pick_dir(requested, need)
    base.mkdir(parents=True, exist_ok=True)
    if shutil.disk_usage(base).free < need:
        sys.exit(f"{prog}: {base} has less than the {human(need)} needed")
    return base


def environment(vhdx_version: str, qemu_version: str, reps: int) -> str:
    """The line that says what ran where: python, vhdx, qemu-img, CPUs, load, repetitions."""
    return (f"python {sys.version.split()[0]}, vhdx {vhdx_version}, {qemu_version}, {os.cpu_count()} CPUs, "
            f"load average {os.getloadavg()[0]:.1f}; {reps} repetitions, best run decides")


# --- report --------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One line of the result table."""

    target: str
    what: str
    ours: str
    other: str
    ratio: str
    verdict: str


def print_table(rows: list[Row], other: str) -> None:
    """The rows under a heading and a rule; ``other`` heads the peer's column. The first two columns
    are left-aligned, the rest right-aligned."""
    heads = Row("target", "measure", "ours", other, "ratio", "result")
    table = [(r.target, r.what, r.ours, r.other, r.ratio, r.verdict) for r in [heads, *rows]]
    widths = [max(len(c) for c in col) for col in zip(*table)]
    for i, cells in enumerate(table):
        print("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))


def mbps(amount: float, seconds: float) -> str:
    """``amount`` bytes in ``seconds`` as decimal MB/s."""
    return f"{amount / seconds / 1e6:,.0f} MB/s"


def opsps(amount: float, seconds: float) -> str:
    """``amount`` operations in ``seconds`` per second."""
    return f"{amount / seconds:,.0f} op/s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"
