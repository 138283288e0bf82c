#!/usr/bin/env python3
"""Side-by-side write benchmark: vhdx (this package) against qemu-img and qemu-io.

It makes its own source data and images in a temporary folder (on /dev/shm when it has room,
else /tmp; the output says which), measures us and the peer in one run, interleaved, and prints
one table with times, MB/s or op/s, the ratio ours/peer and PASS/FAIL per target (issue 3,
item 6):

  seq-write    SIZE (2 GiB) of random data, read in 1 MiB requests from a raw file in the page
               cache and written sequentially through the API into a new dynamic image
               (vhdx.create ... close(), the close and its fsyncs included): at least as fast as
               `qemu-img convert -O vhdx` of the same file with the same block size. The time
               before close() and the time spent in fsync are shown as well.
  rand-4K/32M  COUNT (10,000) random 4 KiB writes into a new 8 GiB dynamic image with 32 MiB
               blocks and a flush() every 100 writes (open ... close() timed): at least as many
               writes per second as qemu-io doing the same writes and flushes (same offsets and
               geometry; commands from a script on stdin; -t writeback, so that qemu flushes when
               told to and not after every write as its default writethrough mode does).
  rand-4K/1M   the same with 1 MiB blocks (a new block for almost every write).
  journal      (information) what the crash-safe metadata path costs per flush in our runs
               (close() counts as a flush): fsyncs, log entries, log bytes, header updates, and
               the time spent in fsync (os.fsync is wrapped and timed inside this process; the
               sequential run's count includes vhdx.create's own two, file and folder). With
               --strace, qemu-io's fsync/fdatasync calls are counted too, for comparison.

Every measurement is repeated (--reps), contenders alternate inside each repetition so that
background load hits them alike, and the best run decides PASS/FAIL (medians are printed too).
The results are checked before they count: qemu-img compare against the source for the
sequential images, and qemu-io reads with pattern checks plus qemu-img check for the random
ones. Numbers only: nothing here is a test (benchmarks/bench_write.py has the micro-benchmarks).

    python benchmarks/compare_write.py             # 2 GiB, 10,000 writes, 5 repetitions
    python benchmarks/compare_write.py --quick     # 256 MiB, 2,000 writes, 2 repetitions
    python benchmarks/compare_write.py --dir /var/tmp   # a real disk: fsync costs what it costs
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common.py, beside this script
from _common import (GiB, KiB, MiB, Row, environment, human, mbps, mount_of, need_tool, opsps,  # noqa: E402
                     parse_size, print_table, run, timed_cmd, verdict, work_base)

import vhdx  # noqa: E402  (_common puts the checkout's src/ on sys.path when vhdx is not installed)

PROG = "compare_write"
CHUNK = 16 * MiB  # granularity of building the source file
WRITE = 4 * KiB  # the random write size
RAND_DISK = 8 * GiB  # virtual size of the random-write images


# --- helpers -----------------------------------------------------------------------------------------
class FsyncTimer:
    """Wraps os.fsync and os.fdatasync for the whole process: calls and seconds spent."""

    def __init__(self) -> None:
        self.calls = 0
        self.seconds = 0.0

    def _wrap(self, fn: Callable[[int], None]) -> Callable[[int], None]:
        def timed(fd: int) -> None:
            t = time.perf_counter()
            try:
                fn(fd)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1

        return timed

    @contextmanager
    def installed(self) -> Iterator[FsyncTimer]:
        saved = os.fsync, getattr(os, "fdatasync", None)
        os.fsync = self._wrap(saved[0])  # type: ignore[assignment]
        if saved[1] is not None:
            os.fdatasync = self._wrap(saved[1])  # type: ignore[assignment]
        try:
            yield self
        finally:
            os.fsync = saved[0]  # type: ignore[assignment]
            if saved[1] is not None:
                os.fdatasync = saved[1]  # type: ignore[assignment]


# --- one run of each contender ------------------------------------------------------------------------
@dataclass
class Run:
    """What one of our runs did besides taking time."""

    seconds: float
    before_close: float = 0.0  # seconds until the last write returned (seq) or until close() (rand)
    fsync_calls: int = 0
    fsync_seconds: float = 0.0
    flushes: int = 0  # flush() calls, close() counted as one
    journal: dict[str, int] = field(default_factory=dict)


def seq_ours(raw: Path, out: Path, size: int, block_size: int, request: int) -> Run:
    out.unlink(missing_ok=True)
    timer = FsyncTimer()
    fd = os.open(raw, os.O_RDONLY)
    try:
        view = memoryview(bytearray(request))
        with timer.installed():
            t = time.perf_counter()
            disk = vhdx.create(out, size, disk_type="dynamic", block_size=block_size)
            journal = disk._engine.journal  # the benchmark may look inside
            write = disk.write
            off = 0
            while off < size:
                n = os.preadv(fd, [view], off)
                write(view[:n] if n < request else view)
                off += n
            t_writes = time.perf_counter()
            disk.close()
            t_end = time.perf_counter()
    finally:
        os.close(fd)
    return Run(t_end - t, t_writes - t, timer.calls, timer.seconds, 1, asdict(journal.stats))


def seq_qemu(raw: Path, out: Path, block_size: int) -> Run:
    out.unlink(missing_ok=True)
    secs = timed_cmd(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o", f"subformat=dynamic,block_size={block_size}",
                      str(raw), str(out)])
    return Run(secs)


def rand_ours(path: Path, block_size: int, offsets: list[int], patterns: list[int], flush_every: int) -> Run:
    path.unlink(missing_ok=True)
    vhdx.create(path, RAND_DISK, disk_type="dynamic", block_size=block_size).close()
    datas = [bytes([p]) * WRITE for p in range(256)]
    writes = [(off, datas[p]) for off, p in zip(offsets, patterns)]
    timer = FsyncTimer()
    flushes = 1
    with timer.installed():
        t = time.perf_counter()
        disk = vhdx.open(path, "r+b")
        journal = disk._engine.journal
        pwrite, flush = disk.pwrite, disk.flush
        for i, (off, data) in enumerate(writes, 1):
            pwrite(off, data)
            if i % flush_every == 0:
                flush()
                flushes += 1
        t_close = time.perf_counter()
        disk.close()
        t_end = time.perf_counter()
    return Run(t_end - t, t_close - t, timer.calls, timer.seconds, flushes, asdict(journal.stats))


def qemu_script(path: Path, offsets: list[int], patterns: list[int], flush_every: int) -> None:
    with open(path, "w") as fh:
        for i, (off, p) in enumerate(zip(offsets, patterns), 1):
            fh.write(f"write -q -P {p} {off} {WRITE}\n")
            if i % flush_every == 0:
                fh.write("flush\n")


def rand_qemu(path: Path, block_size: int, script: Path) -> Run:
    path.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", f"subformat=dynamic,block_size={block_size}", str(path),
         str(RAND_DISK)])
    return Run(timed_cmd(["qemu-io", "-t", "writeback", "-f", "vhdx", str(path)], stdin=script))


def qemu_syncs(path: Path, block_size: int, script: Path, work: Path) -> int | None:
    """fsync + fdatasync calls of one qemu-io run, counted by strace (None without strace)."""
    if shutil.which("strace") is None:
        return None
    path.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", f"subformat=dynamic,block_size={block_size}", str(path),
         str(RAND_DISK)])
    out = work / "strace.txt"
    run(["strace", "-f", "-c", "-o", str(out), "-e", "trace=fsync,fdatasync", "qemu-io", "-t", "writeback", "-f", "vhdx",
         str(path)], stdin=script)
    calls = 0
    for line in out.read_text().splitlines():
        cells = line.split()
        if cells and cells[-1] in ("fsync", "fdatasync"):
            calls += int(cells[3])  # % time, seconds, usecs/call, calls, [errors,] syscall
    return calls


def qemu_startup(path: Path, block_size: int) -> Run:
    """qemu-io opening and closing the same kind of image with nothing to do."""
    path.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", f"block_size={block_size}", str(path), str(RAND_DISK)])
    return Run(timed_cmd(["qemu-io", "-t", "writeback", "-f", "vhdx", "-c", "flush", str(path)]))


# --- checks: a fast result that is wrong counts for nothing ------------------------------------------
def check_seq(raw: Path, image: Path, who: str) -> None:
    got = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vhdx", str(raw), str(image)],
                         capture_output=True, text=True)
    if got.returncode != 0:
        sys.exit(f"compare_write: {who}'s sequential image differs from the source: {got.stdout.strip()} {got.stderr.strip()}")


def last_writes(offsets: list[int], patterns: list[int]) -> dict[int, int]:
    return dict(zip(offsets, patterns))  # later writes to the same offset win


def check_rand(image: Path, expect: dict[int, int], who: str, work: Path, sample: int, rng: np.random.Generator) -> None:
    """qemu-img check, then qemu-io reads a sample of the written offsets (and as many never
    written ones) and verifies their patterns (zeros for the latter)."""
    got = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(image)], capture_output=True, text=True)
    if got.returncode != 0:
        sys.exit(f"compare_write: qemu-img check fails on {who}'s image: {got.stdout.strip()} {got.stderr.strip()}")
    written = sorted(expect)
    picks = rng.choice(len(written), min(sample, len(written)), replace=False).tolist()
    lines = [f"read -q -P {expect[written[i]]} {written[i]} {WRITE}" for i in picks]
    taken = set(expect)
    for off in (rng.integers(0, RAND_DISK // WRITE, sample) * WRITE).tolist():
        if off not in taken:
            lines.append(f"read -q -P 0 {off} {WRITE}")
    script = work / "verify.qemu-io"
    script.write_text("\n".join(lines) + "\n")
    with open(script, "rb") as fh:
        got = subprocess.run(["qemu-io", "-r", "-f", "vhdx", str(image)], stdin=fh, capture_output=True, text=True)
    bad = [line for line in (got.stdout + got.stderr).splitlines() if "fail" in line.lower() or "error" in line.lower()]
    if got.returncode != 0 or bad:
        sys.exit(f"compare_write: qemu-io finds wrong data in {who}'s image: {(bad or [got.stderr])[0]}")
    # And our reader sees qemu's image the same way: both sides really did the same writes.
    with vhdx.open(image) as d:
        for i in picks[:256]:
            off = written[i]
            if d.pread(off, WRITE) != bytes([expect[off]]) * WRITE:
                sys.exit(f"compare_write: {who}'s image reads back wrong at {off} through vhdx")


# --- report -------------------------------------------------------------------------------------------
def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.seconds)


def med(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs)


def journal_rows(label: str, run: Run) -> list[Row]:
    """What the crash-safe path cost in one of our runs, per flush (close() counts as one)."""
    j, f = run.journal, max(run.flushes, 1)
    fsync_share = run.fsync_seconds / run.seconds if run.seconds else 0.0
    return [
        Row(label, f"flushes {run.flushes} (close incl.), commits {j.get('commits', 0)}",
            f"{run.fsync_calls / f:.2f} fsync/flush", f"journal syncs {j.get('syncs', 0) / f:.2f}/flush",
            f"{run.fsync_calls} fsyncs", "info"),
        Row("", "  log entries / log bytes per flush", f"{j.get('entries', 0) / f:.2f}",
            f"{j.get('log_bytes', 0) / f / KiB:,.1f} KiB", "", "info"),
        Row("", "  header updates (whole run)", f"{j.get('header_updates', 0)}", "", "", "info"),
        Row("", "  time in fsync (whole run, per flush)", f"{run.fsync_seconds * 1e3:,.1f} ms",
            f"{run.fsync_seconds / f * 1e3:.3f} ms", f"{fsync_share:.0%} of run", "info"),
    ]


def report(args: argparse.Namespace, run: Run, who: str) -> None:
    if args.verbose:
        extra = f" (before close {run.before_close:.3f} s, fsync {run.fsync_seconds:.3f} s)" if who == "ours" else ""
        print(f"  {who}: {run.seconds:.3f} s{extra}", flush=True)


# --- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=2 * GiB, help="bytes written sequentially (default 2G)")
    p.add_argument("--block-size", type=parse_size, default=32 * MiB, help="block size of the sequential images (32M)")
    p.add_argument("--request", type=parse_size, default=MiB, help="write request size of our sequential run (1M)")
    p.add_argument("--count", type=int, default=10000, help="random 4 KiB writes per run (10000)")
    p.add_argument("--flush-every", type=int, default=100, help="flush after this many random writes (100)")
    p.add_argument("--rand-block-sizes", default="32M,1M", help="block sizes of the random-write images (32M,1M)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per measurement (best and median shown)")
    p.add_argument("--quick", action="store_true", help="256 MiB, 2000 random writes, 2 repetitions")
    p.add_argument("--skip-seq", action="store_true")
    p.add_argument("--skip-rand", action="store_true")
    p.add_argument("--no-verify", action="store_true", help="skip checking the images written")
    p.add_argument("--dir", type=Path, default=None, help="where the images go (default /dev/shm if big enough, else /tmp)")
    p.add_argument("--strace", action="store_true", help="also count qemu-io's fsync calls with strace (one extra run)")
    p.add_argument("--verbose", "-v", action="store_true", help="print every run's time as it is measured")
    p.add_argument("--seed", type=int, default=20240602)
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = p.parse_args(argv)
    if args.quick:
        args.size = min(args.size, 256 * MiB)
        args.count = min(args.count, 2000)
        args.reps = min(args.reps, 2)
    if args.size % args.request or args.size <= 0:
        p.error("--size must be a positive multiple of --request")
    need_tool("qemu-img", PROG)
    need_tool("qemu-io", PROG)

    # Room for the source, both sequential images, and the (sparse) random-write images.
    need = 3 * args.size + 256 * MiB
    base = work_base(args.dir, need, PROG)
    with tempfile.TemporaryDirectory(prefix="vhdx-wbench-", dir=base) as tmp:
        return measure(Path(tmp), args)


def measure(work: Path, args: argparse.Namespace) -> int:
    point, fstype = mount_of(work)
    note = " (tmpfs: fsync costs next to nothing)" if fstype == "tmpfs" else ""
    print(f"images in {work}: {fstype} mounted at {point}{note}")
    qemu_version = run(["qemu-img", "--version"]).stdout.decode().splitlines()[0]
    print(environment(getattr(vhdx, '__version__', '?'), qemu_version, args.reps))
    rng = np.random.default_rng(args.seed)
    rows: list[Row] = []
    failed = False

    # --- sequential -------------------------------------------------------------------------------------
    if not args.skip_seq:
        raw = work / "source.raw"
        print(f"writing the {human(args.size)} source file ...", flush=True)
        with open(raw, "wb") as fh:
            for off in range(0, args.size, CHUNK):
                fh.write(rng.bytes(min(CHUNK, args.size - off)))
        ours_img, qemu_img = work / "seq-ours.vhdx", work / "seq-qemu.vhdx"
        # Both sides once, untimed: the source is read into the page cache and the results checked.
        seq_ours(raw, ours_img, args.size, args.block_size, args.request)
        seq_qemu(raw, qemu_img, args.block_size)
        if not args.no_verify:
            print("checking the sequential images against the source ...", flush=True)
            check_seq(raw, ours_img, "our")
            check_seq(raw, qemu_img, "qemu-img's")
        print(f"measuring seq-write ({human(args.size)}, {human(args.block_size)} blocks) ...", flush=True)
        ours: list[Run] = []
        peer: list[Run] = []
        for _ in range(args.reps):
            for fn, into in ((lambda: seq_ours(raw, ours_img, args.size, args.block_size, args.request), ours),
                             (lambda: seq_qemu(raw, qemu_img, args.block_size), peer)):
                gc.collect()
                into.append(fn())
                report(args, into[-1], "ours" if into is ours else "qemu-img")
        o, q = best(ours), best(peer)
        ratio = q.seconds / o.seconds
        ok = ratio >= 1.0
        failed |= not ok
        rows.append(Row("seq-write", f"API {human(args.request)} writes + close vs qemu-img convert", mbps(args.size, o.seconds),
                        mbps(args.size, q.seconds), f"{ratio:.2f}x", verdict(ok)))
        rows.append(Row("", "  (medians)", mbps(args.size, med(ours)), mbps(args.size, med(peer)),
                        f"{med(peer) / med(ours):.2f}x", ""))
        rows.append(Row("", "  seconds: ours (before close) / convert", f"{o.seconds:.3f} s ({o.before_close:.3f} s)",
                        f"{q.seconds:.3f} s", "", "info"))
        without_close = min(r.before_close for r in ours)
        rows.append(Row("", "  ours without close() (no final flush)", mbps(args.size, without_close),
                        mbps(args.size, q.seconds), f"{q.seconds / without_close:.2f}x", "info"))
        without_fsync = min(r.seconds - r.fsync_seconds for r in ours)
        rows.append(Row("", "  ours minus the time in fsync", mbps(args.size, without_fsync), mbps(args.size, q.seconds),
                        f"{q.seconds / without_fsync:.2f}x", "info"))
        rows += journal_rows("  journal seq", o)
        for f in (raw, ours_img, qemu_img):
            f.unlink(missing_ok=True)

    # --- random 4 KiB writes -------------------------------------------------------------------------------
    if not args.skip_rand:
        offsets = (rng.integers(0, RAND_DISK // WRITE, args.count) * WRITE).tolist()
        patterns = (rng.integers(1, 256, args.count)).tolist()  # non-zero: a lost write shows
        script = work / "writes.qemu-io"
        qemu_script(script, offsets, patterns, args.flush_every)
        expect = last_writes(offsets, patterns)
        for bs_text in args.rand_block_sizes.split(","):
            bs = parse_size(bs_text)
            label = f"rand-4K/{human(bs).replace(' MiB', 'M').replace(' GiB', 'G')}"
            ours_img, qemu_img = work / "rand-ours.vhdx", work / "rand-qemu.vhdx"
            print(f"measuring {label} ({args.count} writes, flush every {args.flush_every}) ...", flush=True)
            ours, peer = [], []
            for rep in range(args.reps):
                for fn, into in ((lambda: rand_ours(ours_img, bs, offsets, patterns, args.flush_every), ours),
                                 (lambda: rand_qemu(qemu_img, bs, script), peer)):
                    gc.collect()
                    into.append(fn())
                    report(args, into[-1], "ours" if into is ours else "qemu-io")
                if rep == 0 and not args.no_verify:
                    check_rand(ours_img, expect, "our", work, 500, rng)
                    check_rand(qemu_img, expect, "qemu-io's", work, 500, rng)
            start = min(qemu_startup(qemu_img, bs).seconds for _ in range(3))
            o, q = best(ours), best(peer)
            ratio = q.seconds / o.seconds
            ok = ratio >= 1.0
            failed |= not ok
            rows.append(Row(label, f"pwrite 4K, flush/{args.flush_every} vs qemu-io", opsps(args.count, o.seconds),
                            opsps(args.count, q.seconds), f"{ratio:.2f}x", verdict(ok)))
            rows.append(Row("", "  (medians)", opsps(args.count, med(ours)), opsps(args.count, med(peer)),
                            f"{med(peer) / med(ours):.2f}x", ""))
            rows.append(Row("", "  seconds (qemu-io incl. start-up)", f"{o.seconds:.3f} s",
                            f"{q.seconds:.3f} s (start {start:.3f})", "", "info"))
            rows.append(Row("", "  ours minus the time in fsync", opsps(args.count, o.seconds - o.fsync_seconds),
                            opsps(args.count, q.seconds), f"{q.seconds / (o.seconds - o.fsync_seconds):.2f}x", "info"))
            rows += journal_rows(f"  journal {label}", o)
            if args.strace:
                syncs = qemu_syncs(qemu_img, bs, script, work)
                if syncs is not None:
                    rows.append(Row("", "  qemu-io fsync+fdatasync (strace)", f"{o.fsync_calls / o.flushes:.2f}/flush",
                                    f"{syncs / o.flushes:.2f}/flush", f"{syncs} calls", "info"))
            for f in (ours_img, qemu_img):
                f.unlink(missing_ok=True)

    print()
    print_table(rows, "peer")
    print()
    print("ratio = peer time / our time (above 1 means ours is faster); best of the repetitions unless "
          "marked median. fsync figures are ours, timed in this process.")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
