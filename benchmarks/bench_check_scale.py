#!/usr/bin/env python3
"""How `vhdx check` and the compaction planner scale with the number of allocated blocks.

Not a test (no test functions; pytest collects nothing here): it prints times and peak memory.

An image with millions of allocated blocks is made cheaply: ``vhdx.create`` makes an empty
dynamic image with 1 MiB blocks (2 TiB for 2M blocks), then every payload BAT entry is written
FULLY_PRESENT directly with numpy, the blocks laid out one after another past the file's end, and
the file is extended to cover them (sparse: nothing is written there, so the check reads no
payload; the file system's SEEK_DATA tells it the space between structures holds nothing). A few
blocks are left out every so often (``--holes``) so that compaction has something to plan.

Timed, each on the same file:

  check     vhdx.ops.check(path)                       the read-only scan, as `vhdx check` runs it
  plan      the compaction planner (ops/compact.py _Compactor.plan) on a writable engine; only
            the plan: the moves themselves are not run (they would copy terabytes)

then each again under tracemalloc for the peak of Python and numpy allocations (tracemalloc slows
pure-Python code, so times come from the first runs).

    .venv/bin/python benchmarks/bench_check_scale.py                 # 2M and 8M blocks
    .venv/bin/python benchmarks/bench_check_scale.py --blocks 2M     # one size
    .venv/bin/python benchmarks/bench_check_scale.py --shuffle       # blocks in random file order
    .venv/bin/python benchmarks/bench_check_scale.py --dir /var/tmp  # where the sparse files go
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TiB  # noqa: E402  (importing it makes `import vhdx` work from a checkout)

import numpy as np  # noqa: E402

import vhdx  # noqa: E402
from vhdx.constants import MiB, PayloadBlockState  # noqa: E402
from vhdx.disk import open_engine  # noqa: E402
from vhdx.ops.check import check  # noqa: E402
from vhdx.ops.compact import _Compactor  # noqa: E402


def parse_count(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def build(path: str, blocks: int, holes: int, shuffle: bool = False) -> int:
    """A dynamic image with ``blocks`` payload blocks of 1 MiB, all FULLY_PRESENT, laid out past
    the file's end with a 1 MiB hole after every ``holes`` blocks (0: none): in block order, or
    with ``shuffle`` in random order (an image written at random). Returns the file size."""
    vhdx.create(path, blocks * MiB, disk_type="dynamic", block_size=MiB).close()
    engine = open_engine(path)
    try:
        g = engine.geometry
        bat_offset = engine.image.region_table.bat.file_offset
        bat = engine.image.bat.copy()
        start = engine.image.file_size
    finally:
        engine.close()
    start = -(-start // MiB) * MiB
    slots = np.arange(g.payload_block_count, dtype=np.uint64)
    if holes:
        slots += slots // np.uint64(holes)  # one free MiB after every `holes` blocks
    offsets = np.uint64(start) + slots * np.uint64(MiB)
    end = int(offsets[-1]) + MiB
    if shuffle:
        offsets = np.random.default_rng(1).permutation(offsets)
    # FileOffsetMB is bits 20-63 (MS-VHDX 2.5.1): a 1 MiB-aligned offset is the entry's upper part.
    bat[g.payload_bat_indices()] = offsets | np.uint64(int(PayloadBlockState.FULLY_PRESENT))
    with open(path, "r+b") as f:
        f.seek(bat_offset)
        f.write(bat[: g.bat_entry_count].astype("<u8").tobytes())
        f.truncate(end)
    return end


def run_check(path: str) -> str:
    report = check(path)
    return (f"exit {report.exit_status}, {report.allocated_clusters} allocated, {report.corruptions} corruptions, "
            f"{report.leaks} leaks, {len(report.findings)} findings")


def run_plan(path: str) -> str:
    engine = open_engine(path, writable=True)
    try:
        moves, end = _Compactor(engine, path, None).plan()  # type: ignore[arg-type]
    finally:
        engine.close()
    return f"{len(moves)} moves, end {end:#x}"


def timed(fn: Callable[[str], Any], path: str) -> tuple[float, Any]:
    gc.collect()
    t = time.perf_counter()
    out = fn(path)
    return time.perf_counter() - t, out


def peak(fn: Callable[[str], Any], path: str) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        fn(path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", nargs="+", default=["2M", "8M"], help="allocated block counts (2M, 8M, 500K)")
    parser.add_argument("--holes", type=int, default=4096, help="a 1 MiB hole after every N blocks (0: none)")
    parser.add_argument("--dir", default=None, help="folder for the sparse images (default: the temp folder)")
    parser.add_argument("--shuffle", action="store_true", help="blocks in random order in the file")
    parser.add_argument("--no-memory", action="store_true", help="skip the tracemalloc runs")
    args = parser.parse_args()
    for text in args.blocks:
        n = parse_count(text)
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            path = os.path.join(tmp, "scale.vhdx")
            t = time.perf_counter()
            size = build(path, n, args.holes, args.shuffle)
            order = "random" if args.shuffle else "block"
            print(f"{n} blocks of 1 MiB in {order} order, file {size / TiB:.2f} TiB (sparse), built in "
                  f"{time.perf_counter() - t:.1f} s")
            for label, fn in (("check", run_check), ("plan", run_plan)):
                seconds, out = timed(fn, path)
                line = f"  {label:6} {seconds:8.2f} s   {out}"
                if not args.no_memory:
                    top = peak(fn, path)
                    line += f"   peak {top / MiB:.0f} MiB ({top / n:.0f} B/block)"
                print(line, flush=True)


if __name__ == "__main__":
    main()
