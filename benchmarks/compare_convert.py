#!/usr/bin/env python3
"""Side-by-side convert benchmark: vhdx.ops.convert (this package) against `qemu-img convert`.

It makes its own images in a temporary folder (on /dev/shm when it has room, else /tmp; the output
says which), measures us and qemu-img in one run, interleaved, and prints one table with times,
MB/s of virtual disk, the ratio and PASS/FAIL per target (issue 4, item 8: at least as fast as
`qemu-img convert`):

  dense   SIZE (2 GiB) of random data.
  sparse  SPARSE_SIZE (16 GiB) with 10 % of its 32 MiB blocks full of random data, the rest
          holes (never written, so the raw file is sparse and the VHDX has no block there).

For each: raw -> dynamic VHDX (32 MiB blocks on both sides) and VHDX -> raw (both tools read
the same VHDX, made by us and checked first). Ours is timed in-process (the library call:
``vhdx.ops.convert``, fsync and rename included); qemu-img as a process (its start-up is a few
ms). One extra row per case times our command line (`vhdx convert`, a Python process whose
start-up costs ~0.2 s) for information.

Every measurement is repeated (--reps), contenders alternate inside each repetition so that
background load hits them alike, and the best run decides PASS/FAIL (medians are printed too).
Results are checked before they count: `qemu-img compare` against the source for every output
of both tools, `qemu-img check` for the VHDX outputs, and the allocated block count of our
sparse VHDX. Numbers only: nothing here is a test.

    python benchmarks/compare_convert.py            # 2 GiB dense, 16 GiB sparse, 3 repetitions
    python benchmarks/compare_convert.py --quick    # 256 MiB dense, 2 GiB sparse, 2 repetitions
    python benchmarks/compare_convert.py --dir /var/tmp   # a real disk instead of tmpfs
"""

from __future__ import annotations

import argparse
import gc
import os
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
from vhdx.ops import convert  # noqa: E402

PROG = "compare_convert"
CHUNK = 16 * MiB  # granularity of building the source files
BLOCK = 32 * MiB  # block size of every VHDX here (and the unit of the sparse image's allocation)


# --- helpers -----------------------------------------------------------------------------------------
def vhdx_script() -> list[str]:
    beside = Path(sys.executable).with_name("vhdx")
    if beside.is_file():
        return [str(beside)]
    return [sys.executable, "-m", "vhdx_cli.main"]


# --- the source images -----------------------------------------------------------------------------
def make_dense(path: Path, size: int, rng: np.random.Generator) -> int:
    with open(path, "wb") as fh:
        for off in range(0, size, CHUNK):
            fh.write(rng.bytes(min(CHUNK, size - off)))
    return size // BLOCK + (1 if size % BLOCK else 0)


def make_sparse(path: Path, size: int, fraction: float, rng: np.random.Generator) -> int:
    """A sparse raw file with ``fraction`` of its blocks full of random data; returns that count."""
    blocks = size // BLOCK
    chosen = sorted(rng.choice(blocks, max(1, round(blocks * fraction)), replace=False).tolist())
    with open(path, "wb") as fh:
        fh.truncate(size)
        for b in chosen:
            fh.seek(b * BLOCK)
            for _ in range(0, BLOCK, CHUNK):
                fh.write(rng.bytes(CHUNK))
    return len(chosen)


# --- one run of each contender -------------------------------------------------------------------------
def ours(src: Path, dst: Path, **kwargs: object) -> float:
    dst.unlink(missing_ok=True)
    t = time.perf_counter()
    convert(src, dst, overwrite=False, **kwargs)  # type: ignore[arg-type]
    return time.perf_counter() - t


def ours_cli(src: Path, dst: Path, extra: list[str]) -> float:
    dst.unlink(missing_ok=True)
    return timed_cmd([*vhdx_script(), "convert", "-q", "--no-progress", *extra, str(src), str(dst)], prog=PROG)


def qemu(src: Path, dst: Path, src_fmt: str, dst_fmt: str, options: list[str]) -> float:
    dst.unlink(missing_ok=True)
    return timed_cmd(["qemu-img", "convert", "-f", src_fmt, "-O", dst_fmt, *options, str(src), str(dst)], prog=PROG)


# --- checks: a fast result that is wrong counts for nothing ----------------------------------------------
def check_same(a: Path, fa: str, b: Path, fb: str, who: str) -> None:
    got = run(["qemu-img", "compare", "-f", fa, "-F", fb, str(a), str(b)], check=False, text=True)
    if got.returncode != 0:
        sys.exit(f"compare_convert: {who}'s output differs from the source: {got.stdout.strip()} {got.stderr.strip()}")


def check_image(path: Path, who: str, data_blocks: int | None) -> None:
    got = run(["qemu-img", "check", "-f", "vhdx", str(path)], check=False, text=True)
    if got.returncode != 0:
        sys.exit(f"compare_convert: qemu-img check fails on {who}'s image: {got.stdout.strip()} {got.stderr.strip()}")
    if data_blocks is not None:
        with vhdx.open(path) as disk:
            allocated = disk.info().allocated_blocks
        if allocated != data_blocks:
            sys.exit(f"compare_convert: {who}'s image allocates {allocated} blocks, the data needs {data_blocks}")


# --- report -------------------------------------------------------------------------------------------------
def measure_pair(label: str, what: str, size: int, reps: int, mine: Callable[[], float], peer: Callable[[], float],
                 cli: Callable[[], float] | None, verbose: bool) -> tuple[list[Row], bool]:
    a: list[float] = []
    b: list[float] = []
    for _ in range(reps):
        for fn, into, who in ((mine, a, "ours"), (peer, b, "qemu-img")):
            gc.collect()
            into.append(fn())
            if verbose:
                print(f"  {label} {who}: {into[-1]:.3f} s", flush=True)
    o, q = min(a), min(b)
    ratio = q / o
    rows = [
        Row(label, what, mbps(size, o), mbps(size, q), f"{ratio:.2f}x", verdict(ratio >= 1.0)),
        Row("", "  (medians)", mbps(size, statistics.median(a)), mbps(size, statistics.median(b)),
            f"{statistics.median(b) / statistics.median(a):.2f}x", ""),
        Row("", "  seconds (best)", f"{o:.3f} s", f"{q:.3f} s", "", "info"),
    ]
    if cli is not None:
        c = min(cli() for _ in range(max(1, reps // 2)))
        rows.append(Row("", "  ours as `vhdx convert` (process)", f"{c:.3f} s", f"{q:.3f} s", f"{q / c:.2f}x", "info"))
    return rows, ratio >= 1.0


# --- main ---------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=2 * GiB, help="dense image size (default 2G)")
    p.add_argument("--sparse-size", type=parse_size, default=16 * GiB, help="sparse image size (default 16G)")
    p.add_argument("--fraction", type=float, default=0.10, help="allocated fraction of the sparse image (0.10)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per measurement (best and median shown)")
    p.add_argument("--quick", action="store_true", help="256 MiB dense, 2 GiB sparse, 2 repetitions")
    p.add_argument("--skip-dense", action="store_true")
    p.add_argument("--skip-sparse", action="store_true")
    p.add_argument("--no-cli", action="store_true", help="skip the informational `vhdx convert` process rows")
    p.add_argument("--dir", type=Path, default=None, help="where the images go (default /dev/shm if big enough)")
    p.add_argument("--verbose", "-v", action="store_true", help="print every run's time as it is measured")
    p.add_argument("--seed", type=int, default=20240604)
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = p.parse_args(argv)
    if args.quick:
        args.size = min(args.size, 256 * MiB)
        args.sparse_size = min(args.sparse_size, 2 * GiB)
        args.reps = min(args.reps, 2)
    need_tool("qemu-img", PROG)
    # Room for a source raw, a source VHDX and one output at a time, per case (data only: sparse).
    need = max(0 if args.skip_dense else 3 * args.size,
               0 if args.skip_sparse else int(3.2 * args.fraction * args.sparse_size))
    need += 256 * MiB
    base = work_base(args.dir, need, PROG)
    with tempfile.TemporaryDirectory(prefix="vhdx-cbench-", dir=base) as tmp:
        return measure(Path(tmp), args)


def measure(work: Path, args: argparse.Namespace) -> int:
    point, fstype = mount_of(work)
    print(f"images in {work}: {fstype} mounted at {point}")
    qemu_version = run(["qemu-img", "--version"], check=False, text=True).stdout.splitlines()[0]
    print(environment(getattr(vhdx, '__version__', '?'), qemu_version, args.reps))
    rng = np.random.default_rng(args.seed)
    rows: list[Row] = []
    failed = False
    cases = []
    if not args.skip_dense:
        cases.append(("dense", args.size, None))
    if not args.skip_sparse:
        cases.append(("sparse", args.sparse_size, args.fraction))
    qemu_vhdx = ["-o", f"subformat=dynamic,block_size={BLOCK}"]
    for name, size, fraction in cases:
        raw, image = work / f"{name}.raw", work / f"{name}.vhdx"
        out_vhdx_ours, out_vhdx_qemu = work / f"{name}-ours.vhdx", work / f"{name}-qemu.vhdx"
        out_raw_ours, out_raw_qemu = work / f"{name}-ours.raw", work / f"{name}-qemu.raw"
        print(f"making the {human(size)} {name} source ...", flush=True)
        data_blocks = make_dense(raw, size, rng) if fraction is None else make_sparse(raw, size, fraction, rng)
        warm(raw)
        label = f"{name} {human(size)}" + ("" if fraction is None else f" {fraction:.0%}")

        # raw -> dynamic VHDX. Both once untimed and checked, then measured.
        print(f"checking raw -> vhdx ({label}) ...", flush=True)
        ours(raw, out_vhdx_ours, block_size=BLOCK)
        qemu(raw, out_vhdx_qemu, "raw", "vhdx", qemu_vhdx)
        for path, who in ((out_vhdx_ours, "our"), (out_vhdx_qemu, "qemu-img's")):
            check_same(raw, "raw", path, "vhdx", who)
            check_image(path, who, data_blocks if who == "our" else None)
        out_vhdx_qemu.unlink()
        print(f"measuring raw -> vhdx ({label}) ...", flush=True)
        got, ok = measure_pair(
            f"{label} raw->vhdx", "dynamic, 32 MiB blocks", size, args.reps,
            lambda: ours(raw, out_vhdx_ours, block_size=BLOCK),
            lambda: qemu(raw, out_vhdx_qemu, "raw", "vhdx", qemu_vhdx),
            None if args.no_cli else (lambda: ours_cli(raw, out_vhdx_ours, ["--block-size", str(BLOCK)])),
            args.verbose)
        rows += got
        failed |= not ok
        out_vhdx_qemu.unlink(missing_ok=True)
        out_vhdx_ours.replace(image)  # the VHDX source of the next measurement (checked above)

        # VHDX -> raw, both tools from the same image.
        print(f"checking vhdx -> raw ({label}) ...", flush=True)
        warm(image)
        ours(image, out_raw_ours)
        qemu(image, out_raw_qemu, "vhdx", "raw", [])
        for path, who in ((out_raw_ours, "our"), (out_raw_qemu, "qemu-img's")):
            check_same(raw, "raw", path, "raw", who)
        usage = {who: os.stat(p).st_blocks * 512 for p, who in ((out_raw_ours, "ours"), (out_raw_qemu, "qemu"))}
        out_raw_qemu.unlink()
        raw.unlink()  # only the VHDX is read from here on
        print(f"measuring vhdx -> raw ({label}) ...", flush=True)
        got, ok = measure_pair(
            f"{label} vhdx->raw", "sparse raw output", size, args.reps,
            lambda: ours(image, out_raw_ours),
            lambda: qemu(image, out_raw_qemu, "vhdx", "raw", []),
            None if args.no_cli else (lambda: ours_cli(image, out_raw_ours, [])),
            args.verbose)
        rows += got
        rows.append(Row("", "  raw output occupies", human(usage["ours"]), human(usage["qemu"]), "", "info"))
        failed |= not ok
        for f in (image, out_raw_ours, out_raw_qemu):
            f.unlink(missing_ok=True)

    print()
    print_table(rows, "qemu-img")
    print()
    print("MB/s of virtual disk; ratio = qemu-img time / our time (above 1 means ours is faster); best of the "
          "repetitions unless marked median.")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
