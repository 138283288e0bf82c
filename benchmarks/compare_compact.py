#!/usr/bin/env python3
"""Side-by-side compact benchmark: `vhdx compact` (in place) against a full convert of the same image.

Issue 4, item 8: compacting the 16 GiB image (10 % allocated) must be faster than a full convert
of it. The alternative to compacting in place is writing a compact copy, so that is what it is
measured against, both with our convert (vhdx.ops.convert) and with `qemu-img convert -O vhdx`.

The source is made here, in a temporary folder (on /dev/shm when it has room, else /tmp; the
output says which): a dynamic VHDX of SIZE (16 GiB) with 32 MiB blocks, FRACTION (10 %) of its
blocks written in random order; of those, one in eight is then overwritten with zeros (allocated
but all zero: the zero scan must find it) and one in eight trimmed (its space leaked: the blocks
above must move down into the hole). So compaction has all three kinds of work: scan, release,
move, then truncate.

Each repetition times, on fresh copies of the source (the copy is not timed):

  ours     vhdx.ops.compact(copy)                         in place, fsyncs and log commits included
  convert  vhdx.ops.convert(source, new.vhdx)             a compact dynamic copy (fsync + rename)
  qemu     qemu-img convert -f vhdx -O vhdx -o subformat=dynamic,block_size=32M source new.vhdx

Results are checked before they count: the compacted copy and both converted images are
compared with the source (`qemu-img compare`), `qemu-img check` and our own check (no leak) pass
on the compacted copy, and it must be smaller than the source. The best of --reps runs decides
PASS/FAIL (ratio = the convert's time / compact's time; above 1 means compacting is faster);
medians are printed too. One extra row times `vhdx compact` as a process, for information.
Numbers only: nothing here is a test.

    python benchmarks/compare_compact.py            # 16 GiB, 10 %, 3 repetitions
    python benchmarks/compare_compact.py --quick    # 2 GiB, 2 repetitions
    python benchmarks/compare_compact.py --dir /var/tmp   # a real disk instead of tmpfs
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common.py, beside this script
from _common import (GiB, MiB, Row, environment, human, mbps, mount_of, need_tool, parse_size,  # noqa: E402
                     print_table, run, timed_cmd, verdict, warm, work_base)

import vhdx  # noqa: E402  (_common puts the checkout's src/ on sys.path when vhdx is not installed)
from vhdx.ops import check, compact, convert  # noqa: E402

PROG = "compare_compact"
BLOCK = 32 * MiB  # block size of every VHDX here


def vhdx_script() -> list[str]:
    beside = Path(sys.executable).with_name("vhdx")
    if beside.is_file():
        return [str(beside)]
    return [sys.executable, "-m", "vhdx_cli.main"]


# --- the source image --------------------------------------------------------------------------------
def make_source(path: Path, size: int, fraction: float, rng: np.random.Generator) -> dict[str, int]:
    """The dynamic VHDX described in the module docstring; returns how many blocks of each kind."""
    blocks = size // BLOCK
    chosen = rng.choice(blocks, max(8, round(blocks * fraction)), replace=False).tolist()  # random file order
    zero = chosen[3::8]
    trimmed = chosen[5::8]
    with vhdx.create(path, size, block_size=BLOCK) as disk:
        for b in chosen:
            disk.pwrite(b * BLOCK, rng.bytes(BLOCK))
        for b in zero:
            disk.pwrite(b * BLOCK, bytes(BLOCK))
        for b in trimmed:
            disk.discard(b * BLOCK, BLOCK)
    return {"written": len(chosen), "zero": len(zero), "trimmed": len(trimmed),
            "data": len(chosen) - len(zero) - len(trimmed)}


# --- one run of each contender -------------------------------------------------------------------------
def fresh_copy(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    shutil.copyfile(src, dst)
    warm(dst)


def ours(src: Path, work: Path) -> float:
    fresh_copy(src, work)
    gc.collect()
    t = time.perf_counter()
    compact(work)
    return time.perf_counter() - t


def ours_cli(src: Path, work: Path) -> float:
    fresh_copy(src, work)
    return timed_cmd([*vhdx_script(), "compact", "-q", "--no-progress", str(work)], prog=PROG)


def our_convert(src: Path, dst: Path) -> float:
    dst.unlink(missing_ok=True)
    gc.collect()
    t = time.perf_counter()
    convert(src, dst)
    return time.perf_counter() - t


def qemu_convert(src: Path, dst: Path) -> float:
    dst.unlink(missing_ok=True)
    return timed_cmd(["qemu-img", "convert", "-f", "vhdx", "-O", "vhdx", "-o", f"subformat=dynamic,block_size={BLOCK}",
                      str(src), str(dst)], prog=PROG)


# --- checks: a fast result that is wrong counts for nothing ----------------------------------------------
def check_same(a: Path, b: Path, who: str) -> None:
    got = run(["qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", str(a), str(b)], check=False, text=True)
    if got.returncode != 0:
        sys.exit(f"{PROG}: {who} differs from the source: {got.stdout.strip()} {got.stderr.strip()}")


def check_compacted(src: Path, path: Path) -> None:
    check_same(src, path, "the compacted copy")
    got = run(["qemu-img", "check", "-f", "vhdx", str(path)], check=False, text=True)
    if got.returncode != 0:
        sys.exit(f"{PROG}: qemu-img check fails on the compacted copy: {got.stdout.strip()} {got.stderr.strip()}")
    report = check(path)
    if report.corruptions or report.leaks:
        sys.exit(f"{PROG}: vhdx check finds {report.corruptions} corruptions, {report.leaks} leaks after compaction")
    if path.stat().st_size >= src.stat().st_size:
        sys.exit(f"{PROG}: the compacted copy is not smaller than the source")


# --- report -------------------------------------------------------------------------------------------------
def measure(work: Path, args: argparse.Namespace) -> int:
    point, fstype = mount_of(work)
    print(f"images in {work}: {fstype} mounted at {point}")
    qemu_version = run(["qemu-img", "--version"], check=False, text=True).stdout.splitlines()[0]
    print(environment(getattr(vhdx, "__version__", "?"), qemu_version, args.reps))
    rng = np.random.default_rng(args.seed)
    src, copy = work / "source.vhdx", work / "compacted.vhdx"
    out_ours, out_qemu = work / "converted-ours.vhdx", work / "converted-qemu.vhdx"
    label = f"{human(args.size)} {args.fraction:.0%}"
    print(f"making the {label} source ...", flush=True)
    kinds = make_source(src, args.size, args.fraction, rng)
    print(f"  {kinds['written']} blocks of 32 MiB written: {kinds['data']} keep data, {kinds['zero']} rewritten with "
          f"zeros, {kinds['trimmed']} trimmed; file {human(src.stat().st_size)}", flush=True)
    warm(src)

    print("checking ...", flush=True)
    fresh_copy(src, copy)
    result = compact(copy)
    check_compacted(src, copy)
    our_convert(src, out_ours)
    qemu_convert(src, out_qemu)
    check_same(src, out_ours, "our converted image")
    check_same(src, out_qemu, "qemu-img's converted image")
    sizes = {"compact": copy.stat().st_size, "convert": out_ours.stat().st_size, "qemu": out_qemu.stat().st_size}
    print(f"  compact: {result.blocks_freed} blocks freed, {result.blocks_moved} moved, {human(result.bytes_read)} read, "
          f"{human(result.bytes_written)} copied; file {human(result.file_size_before)} -> {human(result.file_size_after)}",
          flush=True)

    print("measuring ...", flush=True)
    times: dict[str, list[float]] = {"ours": [], "convert": [], "qemu": []}
    runs: list[tuple[str, Callable[[], float]]] = [
        ("ours", lambda: ours(src, copy)),
        ("convert", lambda: our_convert(src, out_ours)),
        ("qemu", lambda: qemu_convert(src, out_qemu)),
    ]
    for _ in range(args.reps):
        for who, fn in runs:  # interleaved, so background load hits all alike
            times[who].append(fn())
            if args.verbose:
                print(f"  {who}: {times[who][-1]:.3f} s", flush=True)
    o = min(times["ours"])
    rows: list[Row] = []
    failed = False
    for peer, name in (("convert", "vhdx convert (ours)"), ("qemu", "qemu-img convert")):
        p = min(times[peer])
        ratio = p / o
        failed |= ratio < 1.0
        rows += [
            Row(f"{label} compact", f"vs {name}", f"{o:.3f} s", f"{p:.3f} s", f"{ratio:.2f}x", verdict(ratio >= 1.0)),
            Row("", "  (medians)", f"{statistics.median(times['ours']):.3f} s", f"{statistics.median(times[peer]):.3f} s",
                f"{statistics.median(times[peer]) / statistics.median(times['ours']):.2f}x", ""),
            Row("", "  MB/s of virtual disk", mbps(args.size, o), mbps(args.size, p), "", "info"),
            Row("", "  file afterwards", human(sizes["compact"]), human(sizes[peer]), "", "info"),
        ]
    if not args.no_cli:
        c = min(ours_cli(src, copy) for _ in range(max(1, args.reps // 2)))
        q = min(times["qemu"])
        rows.append(Row("", "ours as `vhdx compact` (process) vs qemu-img", f"{c:.3f} s", f"{q:.3f} s", f"{q / c:.2f}x",
                        "info"))
    print()
    print_table(rows, "convert")
    print()
    print("ratio = the convert's time / compact's time (above 1 means compacting in place is faster); best of the "
          "repetitions unless marked median. Each compact run works on a fresh copy of the source (copy not timed).")
    return 1 if failed and args.strict else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=16 * GiB, help="virtual size (default 16G)")
    p.add_argument("--fraction", type=float, default=0.10, help="fraction of blocks written (0.10)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement (best and median shown)")
    p.add_argument("--quick", action="store_true", help="2 GiB, 2 repetitions")
    p.add_argument("--no-cli", action="store_true", help="skip the informational `vhdx compact` process row")
    p.add_argument("--dir", type=Path, default=None, help="where the images go (default /dev/shm if big enough)")
    p.add_argument("--verbose", "-v", action="store_true", help="print every run's time as it is measured")
    p.add_argument("--seed", type=int, default=20240611)
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = p.parse_args(argv)
    if args.quick:
        args.size = min(args.size, 2 * GiB)
        args.reps = min(args.reps, 2)
    need_tool("qemu-img", PROG)
    # The source, a compacted copy and two converted images, all about the written data's size.
    need = int(4.2 * args.fraction * args.size) + 256 * MiB
    base = work_base(args.dir, need, PROG)
    with tempfile.TemporaryDirectory(prefix="vhdx-compact-bench-", dir=base) as tmp:
        return measure(Path(tmp), args)


if __name__ == "__main__":
    sys.exit(main())
