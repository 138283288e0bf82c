#!/usr/bin/env python3
"""Side-by-side NBD benchmark: `vhdx serve` (this package, pure Python) against `qemu-nbd`.

It makes a fully allocated dynamic VHDX of SIZE (2 GiB) random data in a temporary folder, serves
it read-only with each server in turn on a loopback port, and times `nbdcopy URL null:` (the real
libnbd client, default request size and connections; the null: target discards, so only the
server and the client are measured). Then it does the same for a 10 %-allocated sparse image,
where both servers answer base:allocation and nbdcopy skips the holes. Each copy is checked first
(nbdcopy to a file, compared with `vhdx cat`). Target (issue 5, item 5): our throughput at least
50 % of qemu-nbd's on the dense image.

Every measurement is repeated (--reps), servers alternate inside each repetition, and the best
run decides; medians are printed too. Numbers only: nothing here is a test.

    python benchmarks/compare_nbd.py              # 2 GiB, 3 repetitions
    python benchmarks/compare_nbd.py --quick      # 512 MiB, 2 repetitions
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common.py, beside this script
from _common import GiB, MiB, Row, human, mbps, need_tool, parse_size, print_table, run, verdict, warm  # noqa: E402

import vhdx  # noqa: E402

PROG = "compare_nbd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ours(image: Path) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "vhdx_cli.main", "serve", str(image), "--bind", "127.0.0.1:0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip() if proc.stdout else ""
    if not url.startswith("nbd://"):
        proc.kill()
        sys.exit(f"{PROG}: vhdx serve did not start: {proc.stderr.read() if proc.stderr else ''}")
    return proc, url


def start_qemu(image: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["qemu-nbd", "-r", "-f", "vhdx", "-b", "127.0.0.1", "-p", str(port), "-x", "disk",
                             "--shared=8", "--persistent", str(image)], stderr=subprocess.PIPE)
    url = f"nbd://127.0.0.1:{port}/disk"
    for _ in range(200):
        if run(["nbdinfo", "--size", url], check=False).returncode == 0:
            return proc, url
        time.sleep(0.05)
    proc.kill()
    sys.exit(f"{PROG}: qemu-nbd did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def nbdcopy_time(url: str) -> float:
    t = time.perf_counter()
    run(["nbdcopy", url, "null:"])
    return time.perf_counter() - t


def make_image(path: Path, size: int, fraction: float, rng: np.random.Generator) -> None:
    block = 32 * MiB
    with vhdx.create(path, size, block_size=block) as d:
        blocks = size // block
        chosen = sorted(rng.choice(blocks, size=max(1, int(blocks * fraction)), replace=False).tolist())
        for b in chosen:
            for off in range(0, block, 8 * MiB):
                d.pwrite(b * block + off, rng.integers(0, 256, 8 * MiB, dtype=np.uint8).tobytes())


def verify(url: str, image: Path, scratch: Path) -> None:
    out = scratch / "verify.raw"
    run(["nbdcopy", url, str(out)])
    want = hashlib.sha256()
    with vhdx.open(image) as d:
        while chunk := d.read(16 * MiB):
            want.update(chunk)
    got = hashlib.sha256()
    with open(out, "rb") as fh:
        while chunk := fh.read(16 * MiB):
            got.update(chunk)
    out.unlink()
    if got.digest() != want.digest():
        sys.exit(f"{PROG}: {url} served different bytes from {image}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=2 * GiB)
    ap.add_argument("--sparse-size", type=parse_size, default=8 * GiB)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.sparse_size, args.reps = 512 * MiB, 2 * GiB, 2
    for tool in ("qemu-nbd", "nbdcopy", "nbdinfo"):
        need_tool(tool, PROG)
    rng = np.random.default_rng(20261129)
    base = args.dir or Path(tempfile.gettempdir())
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(dir=base, prefix="vhdx-nbd-") as tmp:
        work = Path(tmp)
        cases = [("dense", work / "dense.vhdx", args.size, 1.0), ("sparse", work / "sparse.vhdx", args.sparse_size, 0.10)]
        for _, path, size, fraction in cases:
            make_image(path, size, fraction, rng)
            warm(path)
        print(f"python {sys.version.split()[0]}, vhdx {vhdx.__version__}, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f}; images in {work}; {args.reps} repetitions, best run decides")
        for label, path, size, _ in cases:
            servers = {"ours": start_ours(path), "qemu-nbd": start_qemu(path)}
            try:
                for _, url in servers.values():
                    verify(url, path, work)
                times: dict[str, list[float]] = {"ours": [], "qemu-nbd": []}
                for rep in range(args.reps):
                    order = list(servers) if rep % 2 == 0 else list(reversed(servers))
                    for name in order:
                        times[name].append(nbdcopy_time(servers[name][1]))
            finally:
                for proc, _ in servers.values():
                    stop(proc)
            ours, theirs = min(times["ours"]), min(times["qemu-nbd"])
            ratio = theirs / ours
            target = f"{label} {human(size)}"
            if label == "dense":
                rows.append(Row(target, "nbdcopy URL null: (best)", mbps(size, ours), mbps(size, theirs),
                                f"{ratio:.2f}x", verdict(ratio >= 0.5)))
            else:
                rows.append(Row(target, "nbdcopy URL null: (best)", f"{ours:.2f} s", f"{theirs:.2f} s",
                                f"{ratio:.2f}x", "info"))
            rows.append(Row("", "(medians)", mbps(size, statistics.median(times["ours"])),
                            mbps(size, statistics.median(times["qemu-nbd"])),
                            f"{statistics.median(times['qemu-nbd']) / statistics.median(times['ours']):.2f}x", ""))
    print()
    print_table(rows, "qemu-nbd")
    print("\nratio = ours / qemu-nbd throughput (1.00x = as fast); target: dense >= 0.50x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
