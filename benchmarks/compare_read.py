#!/usr/bin/env python3
"""Side-by-side read benchmark: vhdx (this package) against libvhdi (pyvhdi), qemu-img and the raw file.

It builds its own images in a temporary folder, warms the page cache, then measures everything in
one run and prints one table with MB/s, ops/s, the ratio ours/pyvhdi and PASS/FAIL per target
(issue 2, item 6):

  seq-1M / seq-32M   sequential readinto() of a fully allocated dynamic image with 1 MiB and
                     32 MiB requests, straight into the caller's buffer: at least as fast as
                     pyvhdi at the same request size.
  rand-4K            random 4 KiB reads (seek + read): at least as many per second as pyvhdi.
  sparse-full        full sequential read of a 16 GiB, 10 % allocated image: the holes cost no
                     more than zero-filling them (time <= 1.5 x (allocated-only read + memset)).
  sparse-copy        sparse-aware copy driven by extents(): time proportional to the allocated
                     part (<= 1.5 x the time the same copy takes per byte on the dense image).
  open-64T           vhdx.open of a 64 TiB empty dynamic image in-process: median < 20 ms; memory
                     proportional to the BAT (tracemalloc peak <= 64 bytes per BAT entry).

Our reads of 1 MiB and more are split between the calling thread and helper threads
(src/vhdx/engine/helpers.py: one helper on a 2-CPU machine), so they can beat a single
os.preadv of the same bytes; a row with the helpers turned off shows what one thread does.

Informational rows: os.preadv on the raw file and on the .vhdx's own payload bytes (the page
cache can serve two files holding the same bytes at different speeds, so the second is the fair
floor), qemu-img convert (to a null-co target) against cat, and pyvhdi where it has no target.

Every measurement is repeated (--reps); contenders are interleaved inside each repetition, in a
rotating order, so that background load hits them alike; the best run decides (the median is
printed too). A speed ratio within 3 % below 1 is reported as TIE: at that point both readers
wait on the same kernel copy. Caller buffers are page-aligned (see caller_buffer). Numbers
only: nothing here is a test; --strict turns a miss into exit status 1.

    python benchmarks/compare_read.py            # 1 GiB image, 16 GiB sparse image, 5 repetitions
    python benchmarks/compare_read.py --quick    # 256 MiB, 2 GiB sparse, 2 repetitions
    python benchmarks/compare_read.py --size 2G --keep /tmp/vhdx-bench   # reuse images later
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import mmap
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _common.py, beside this script
from _common import GiB, MiB, Row, human, need_tool, parse_size, print_table, run, timed_cmd, verdict, warm  # noqa: E402
from _common import mbps as _mbps, opsps as _opsps  # noqa: E402

import vhdx  # noqa: E402  (_common puts the checkout's src/ on sys.path when vhdx is not installed)
from vhdx.engine import helpers  # noqa: E402

try:
    import pyvhdi
except ImportError:
    pyvhdi = None

CHUNK = 16 * MiB  # granularity of image building and cache warming
SPARSE_GRAIN = 32 * MiB  # allocated runs of the sparse image: a multiple of every qemu default block size


# --- helpers -----------------------------------------------------------------------------------------
def write_random(fd: int, offset: int, length: int, rng: np.random.Generator) -> None:
    end = offset + length
    while offset < end:
        n = min(CHUNK, end - offset)
        os.pwrite(fd, rng.bytes(n), offset)
        offset += n


# --- the images ---------------------------------------------------------------------------------------
@dataclass
class Images:
    raw: Path  # random data, fully allocated
    dense: Path  # the same bytes in a dynamic VHDX
    sparse_raw: Path
    sparse: Path  # dynamic VHDX, ~10 % allocated
    big: Path  # 64 TiB, empty
    size: int
    sparse_size: int
    sparse_data: int  # bytes of data written into the sparse raw file


def to_vhdx(raw: Path, out: Path, size: int, block_size: str | None) -> None:
    """qemu-img create, then qemu-img convert into it (the target starts out all zero)."""
    opts = ["-o", f"block_size={block_size}"] if block_size else []
    run(["qemu-img", "create", "-q", "-f", "vhdx", *opts, str(out), str(size)])
    run(["qemu-img", "convert", "-n", "--target-is-zero", "-f", "raw", "-O", "vhdx", str(raw), str(out)])


def build(work: Path, args: argparse.Namespace) -> Images:
    need_tool("qemu-img", "compare_read", "to build the test images")
    rng = np.random.default_rng(args.seed)
    img = Images(work / "dense.raw", work / "dense.vhdx", work / "sparse.raw", work / "sparse.vhdx",
                 work / "big.vhdx", args.size, args.sparse_size, 0)
    stamp = work / f"built-{args.size}-{args.sparse_size}-{args.sparse_fraction}-{args.block_size}-{args.big_size}-{args.seed}"
    grains = args.sparse_size // SPARSE_GRAIN
    img.sparse_data = max(1, round(grains * args.sparse_fraction)) * SPARSE_GRAIN
    if stamp.exists():
        print(f"reusing the images in {work}")
        return img
    for old in work.glob("built-*"):
        old.unlink()
    t0 = time.perf_counter()
    print(f"building images in {work} ...", flush=True)
    fd = os.open(img.raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        write_random(fd, 0, args.size, rng)
    finally:
        os.close(fd)
    to_vhdx(img.raw, img.dense, args.size, args.block_size)

    fd = os.open(img.sparse_raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, args.sparse_size)
        for g in sorted(rng.choice(grains, img.sparse_data // SPARSE_GRAIN, replace=False).tolist()):
            write_random(fd, g * SPARSE_GRAIN, SPARSE_GRAIN, rng)
    finally:
        os.close(fd)
    to_vhdx(img.sparse_raw, img.sparse, args.sparse_size, args.block_size)

    if img.big.exists():
        img.big.unlink()
    run(["qemu-img", "create", "-q", "-f", "vhdx", *(["-o", f"block_size={args.big_block_size}"] if args.big_block_size else []),
         str(img.big), str(args.big_size)])
    stamp.touch()
    print(f"  built in {time.perf_counter() - t0:.1f} s", flush=True)
    return img


def check_data(img: Images, rng: np.random.Generator) -> None:
    """Every contender must return the raw file's bytes, or its speed means nothing."""
    fd = os.open(img.raw, os.O_RDONLY)
    vf = None
    try:
        with vhdx.open(img.dense) as d:
            if pyvhdi is not None:
                vf = pyvhdi.file()
                vf.open(str(img.dense))
            for off in rng.integers(0, max(1, img.size - MiB), 32).tolist():
                want = os.pread(fd, MiB, off)
                d.seek(off)
                if d.read(MiB) != want:
                    sys.exit(f"compare_read: vhdx returned wrong data at {off}")
                if vf is not None:
                    vf.seek(off, os.SEEK_SET)
                    if vf.read_buffer(MiB) != want:
                        sys.exit(f"compare_read: pyvhdi returned wrong data at {off}")
    finally:
        os.close(fd)
        if vf is not None:
            vf.close()


# --- measurements -------------------------------------------------------------------------------------
# Where the caller's buffer starts matters more than anything the reader does: on some CPUs
# (this was found on an AMD EPYC with FSRM) the kernel's copy from the page cache runs about 4x
# slower into a destination that starts 1-31 bytes past a 4 KiB boundary, and a large bytearray
# fresh from malloc starts 16 bytes past one. Every contender that reads into a caller's buffer
# therefore gets a page-aligned one (as a careful caller would use); pyvhdi allocates its own.
# --misaligned-too adds a row that shows the effect.
MISALIGN = 16


def caller_buffer(size: int, misalign: int = 0) -> memoryview:
    """A writable buffer that starts ``misalign`` bytes past a page boundary."""
    return memoryview(mmap.mmap(-1, size + misalign))[misalign : misalign + size]
@dataclass
class Sample:
    seconds: list[float] = field(default_factory=list)
    amount: float = 0.0  # bytes or operations per run

    def best(self) -> float:
        return min(self.seconds)

    def median(self) -> float:
        return statistics.median(self.seconds)

    def elapsed(self, how: str = "best") -> float:
        return self.best() if how == "best" else self.median()

    def rate(self, how: str = "best") -> float:
        return self.amount / self.elapsed(how)


def interleaved(cases: dict[str, Callable[[], float]], reps: int, amounts: dict[str, float]) -> dict[str, Sample]:
    """Run every case once per repetition, in turn; each case returns its own elapsed seconds.

    The order rotates from one repetition to the next, so that no contender always runs right
    after the same neighbour (whose leftovers in the caches or the allocator could favour it).
    """
    out = {name: Sample(amount=amounts[name]) for name in cases}
    names = list(cases)
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            out[name].seconds.append(cases[name]())
    return out


def seq_raw(path: Path, request: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        view = caller_buffer(request)
        off = 0
        t = time.perf_counter()
        while (n := os.preadv(fd, [view], off)) > 0:
            off += n
        return time.perf_counter() - t
    finally:
        os.close(fd)


def seq_file_ranges(path: Path, ranges: list[tuple[int, int]], request: int) -> float:
    """os.preadv over byte ranges of a file: the image's own payload, read with no format at all."""
    fd = os.open(path, os.O_RDONLY)
    try:
        view = caller_buffer(request)
        t = time.perf_counter()
        for start, length in ranges:
            off, end = start, start + length
            while off < end:
                off += os.preadv(fd, [view[: min(request, end - off)]], off)
        return time.perf_counter() - t
    finally:
        os.close(fd)


def seq_ours(path: Path, request: int, misalign: int = 0, helper_threads: int | None = None) -> float:
    """Our readinto loop; ``helper_threads`` overrides how many threads a large read is split across."""
    before = helpers.count()
    if helper_threads is not None:
        helpers.configure(helper_threads)
    try:
        return _seq_ours(path, request, misalign)
    finally:
        helpers.configure(before)


def _seq_ours(path: Path, request: int, misalign: int) -> float:
    with vhdx.open(path) as d:
        view = caller_buffer(request, misalign)
        readinto = d.readinto
        t = time.perf_counter()
        while readinto(view):
            pass
        return time.perf_counter() - t


def seq_vhdi(path: Path, request: int) -> float:
    f = pyvhdi.file()
    f.open(str(path))
    try:
        read = f.read_buffer
        t = time.perf_counter()
        while read(request):
            pass
        return time.perf_counter() - t
    finally:
        f.close()


def rand_raw(path: Path, offsets: list[int]) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        pread = os.pread
        t = time.perf_counter()
        for off in offsets:
            pread(fd, 4096, off)
        return time.perf_counter() - t
    finally:
        os.close(fd)


def rand_ours(path: Path, offsets: list[int]) -> float:
    with vhdx.open(path) as d:
        seek, read = d.seek, d.read
        t = time.perf_counter()
        for off in offsets:
            seek(off)
            read(4096)
        return time.perf_counter() - t


def rand_ours_readinto(path: Path, offsets: list[int]) -> float:
    with vhdx.open(path) as d:
        seek, readinto = d.seek, d.readinto
        view = caller_buffer(4096)
        t = time.perf_counter()
        for off in offsets:
            seek(off)
            readinto(view)
        return time.perf_counter() - t


def rand_vhdi(path: Path, offsets: list[int]) -> float:
    f = pyvhdi.file()
    f.open(str(path))
    try:
        seek, read = f.seek, f.read_buffer
        t = time.perf_counter()
        for off in offsets:
            seek(off, 0)
            read(4096)
        return time.perf_counter() - t
    finally:
        f.close()


def qemu_read(path: Path, size: int) -> float:
    # A null-co target discards what it is given, so this times qemu's reading (and its copy loop).
    return timed_cmd(["qemu-img", "convert", "-n", "-f", "vhdx", str(path), "--target-image-opts",
                      f"driver=null-co,size={size}"])


def alloc_only_ours(path: Path, request: int) -> float:
    """Read only the data extents (extents() is part of the timed work)."""
    with vhdx.open(path) as d:
        view = caller_buffer(request)
        t = time.perf_counter()
        for e in d.extents():
            if e.state != "data":
                continue
            pos, end = e.virtual_offset, e.end
            d.seek(pos)
            while pos < end:
                pos += d.readinto(view[: min(request, end - pos)])
        return time.perf_counter() - t


def extents_copy(src: Path, dst: Path, request: int) -> float:
    """A sparse-aware copy: data extents are read and written at their offset, holes are skipped."""
    try:
        with vhdx.open(src) as d:
            view = caller_buffer(request)
            t = time.perf_counter()
            out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.ftruncate(out, d.size)
                for e in d.extents():
                    if e.state != "data":
                        continue
                    pos, end = e.virtual_offset, e.end
                    d.seek(pos)
                    while pos < end:
                        n = d.readinto(view[: min(request, end - pos)])
                        os.pwrite(out, view[:n], pos)
                        pos += n
            finally:
                os.close(out)
            return time.perf_counter() - t
    finally:
        dst.unlink(missing_ok=True)


def copy_folder(args: argparse.Namespace, work: Path, need: int) -> Path:
    """Where the copies go: tmpfs when it has room, so that the kernel's writeback of a
    disk-backed file (which starts once enough dirty data piles up, i.e. more for bigger copies)
    does not blur a measurement of how the copy scales with the allocated size."""
    if args.copy_dir is not None:
        return args.copy_dir
    shm = Path("/dev/shm")
    try:
        st = os.statvfs(shm)
    except OSError:
        return work
    return shm if st.f_bavail * st.f_frsize > 2 * need else work


def qemu_copy(src: Path, dst: Path) -> float:
    try:
        return timed_cmd(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(src), str(dst)])
    finally:
        dst.unlink(missing_ok=True)


def memset_time(total: int, request: int) -> float:
    """What zero-filling ``total`` bytes in ``request``-sized pieces costs on this machine."""
    buf = (ctypes.c_char * request)()
    addr = ctypes.addressof(buf)
    t = time.perf_counter()
    for _ in range(total // request):
        ctypes.memset(addr, 0, request)
    return time.perf_counter() - t


def open_times(path: Path, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        gc.collect()
        t = time.perf_counter()
        d = vhdx.open(path)
        out.append(time.perf_counter() - t)
        d.close()
    return out


def open_times_vhdi(path: Path, reps: int) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        f = pyvhdi.file()
        f.open(str(path))
        out.append(time.perf_counter() - t)
        f.close()
    return out


def rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_memory(path: Path) -> tuple[int, int, int, int]:
    """(tracemalloc peak during open, tracemalloc retained while open, RSS delta, BAT entries)."""
    vhdx.open(path).close()  # imports and first-use costs out of the way
    gc.collect()
    before = rss() if os.path.exists("/proc/self/statm") else 0
    tracemalloc.start()
    d = vhdx.open(path)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    after = rss() if before else 0
    try:
        entries = len(d._engine.image.bat)  # the benchmark may look inside
    except AttributeError:
        entries = d.info().to_dict().get("bat_entries", 0)
    d.close()
    return peak, current, after - before, entries


# --- report -------------------------------------------------------------------------------------------
def mbps(s: Sample, how: str = "best") -> str:
    return _mbps(s.amount, s.elapsed(how))


def opsps(s: Sample, how: str = "best") -> str:
    return _opsps(s.amount, s.elapsed(how))


# Two readers that both end in the kernel's page-cache copy tie; run-to-run noise on a shared
# machine is a few per cent, so a ratio just under 1 is reported as a tie rather than a miss.
TIE_BAND = 0.97


def versus(ratio: float) -> tuple[bool, str]:
    """(missed, label) for a speed ratio ours/reference whose target is >= 1."""
    if ratio >= 1.0:
        return False, "PASS"
    if ratio >= TIE_BAND:
        return False, "TIE"
    return True, "FAIL"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=parse_size, default=GiB, help="dense image size (default 1G)")
    p.add_argument("--sparse-size", type=parse_size, default=16 * GiB, help="sparse image size (default 16G)")
    p.add_argument("--sparse-fraction", type=float, default=0.10, help="allocated fraction of the sparse image")
    p.add_argument("--big-size", type=parse_size, default=64 << 40, help="empty image for the open test (default 64T)")
    p.add_argument("--block-size", default=None, help="VHDX block size for the dense and sparse images (qemu default)")
    p.add_argument("--big-block-size", default=None, help="VHDX block size of the empty image (qemu default)")
    p.add_argument("--reps", type=int, default=5, help="repetitions per measurement (best and median shown)")
    p.add_argument("--random-count", type=int, default=20000, help="random 4 KiB reads per run")
    p.add_argument("--open-reps", type=int, default=30, help="opens of the empty image")
    p.add_argument("--quick", action="store_true", help="256 MiB / 2 GiB images, 2 repetitions, 5000 random reads")
    p.add_argument("--misaligned-too", action="store_true",
                   help="also time readinto() into a buffer 16 bytes past a page boundary (see caller_buffer)")
    p.add_argument("--copy-dir", type=Path, default=None,
                   help="where the sparse-copy measurement writes (default /dev/shm when it has room)")
    p.add_argument("--skip-sparse", action="store_true")
    p.add_argument("--skip-qemu", action="store_true")
    p.add_argument("--keep", type=Path, default=None, help="build (or reuse) the images in this folder and keep them")
    p.add_argument("--seed", type=int, default=20240601)
    p.add_argument("--strict", action="store_true", help="exit with status 1 when a target is missed")
    args = p.parse_args(argv)
    if args.quick:
        args.size = min(args.size, 256 * MiB)
        args.sparse_size = min(args.sparse_size, 2 * GiB)
        args.reps = min(args.reps, 2)
        args.random_count = min(args.random_count, 5000)
        args.open_reps = min(args.open_reps, 10)

    tmp = None
    if args.keep is not None:
        work = args.keep
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vhdx-bench-")
        work = Path(tmp.name)
    try:
        return measure(work, args)
    finally:
        if tmp is not None:
            tmp.cleanup()


def measure(work: Path, args: argparse.Namespace) -> int:
    img = build(work, args)
    rng = np.random.default_rng(args.seed + 1)
    have_vhdi = pyvhdi is not None
    if not have_vhdi:
        print("pyvhdi is not installed: the ratios against libvhdi are not available")
    print("warming the page cache ...", flush=True)
    for path in (img.raw, img.dense, img.sparse_raw, img.sparse, img.big):
        warm(path)
    check_data(img, rng)
    with vhdx.open(img.dense) as d:
        dense_block = d.block_size
        dense_ranges = [(e.file_offset, e.length) for e in d.extents() if e.state == "data" and e.file_offset is not None]
        dense_alloc = sum(length for _, length in dense_ranges)
    with vhdx.open(img.sparse) as d:
        sparse_alloc = sum(e.length for e in d.extents() if e.state == "data")
    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, vhdx {getattr(vhdx, '__version__', '?')}, "
          f"pyvhdi {getattr(pyvhdi, 'get_version', lambda: 'n/a')() if have_vhdi else 'n/a'}, {os.cpu_count()} CPUs")
    print(f"dense image: {human(img.size)}, block size {human(dense_block)}, {dense_alloc / img.size:.0%} allocated; "
          f"sparse image: {human(img.sparse_size)}, {sparse_alloc / img.sparse_size:.1%} allocated; "
          f"empty image: {human(args.big_size)}; {args.reps} repetitions, best run decides")
    rows: list[Row] = []
    failed = False

    # --- sequential -------------------------------------------------------------------------------------
    for label, request in (("seq-1M", MiB), ("seq-32M", 32 * MiB)):
        print(f"measuring {label} ...", flush=True)
        cases: dict[str, Callable[[], float]] = {
            "raw": lambda r=request: seq_raw(img.raw, r),
            "payload": lambda r=request: seq_file_ranges(img.dense, dense_ranges, r),
            "ours": lambda r=request: seq_ours(img.dense, r),
            "ours_one_thread": lambda r=request: seq_ours(img.dense, r, helper_threads=0),
        }
        if have_vhdi:
            cases["vhdi"] = lambda r=request: seq_vhdi(img.dense, r)
        if args.misaligned_too:
            cases["ours_misaligned"] = lambda r=request: seq_ours(img.dense, r, MISALIGN)
        res = interleaved(cases, args.reps, {k: img.size for k in cases})
        ours, raw = res["ours"], res["raw"]
        rows.append(Row(label, "os.preadv raw file", mbps(raw), f"median {mbps(raw, 'median')}", "", "info"))
        if have_vhdi:
            ratio = ours.rate() / res["vhdi"].rate()
            missed, label_ = versus(ratio)
            failed |= missed
            rows.append(Row(label, "readinto vs pyvhdi", mbps(ours), mbps(res["vhdi"]), f"{ratio:.2f}x", label_))
            rows.append(Row("", "  (medians)", mbps(ours, "median"), mbps(res["vhdi"], "median"),
                            f"{ours.rate('median') / res['vhdi'].rate('median'):.2f}x", ""))
        rows.append(Row("", "  ours / raw preadv", "", "", f"{ours.rate() / raw.rate():.2f}x", "info"))
        rows.append(Row("", "  ours / preadv of the .vhdx payload", mbps(ours), mbps(res["payload"]),
                        f"{ours.rate() / res['payload'].rate():.2f}x", "info"))
        one = res["ours_one_thread"]
        rows.append(Row("", "  ours, no helper threads (one preadv)", mbps(one),
                        mbps(res["vhdi"]) if have_vhdi else "",
                        f"{one.rate() / res['vhdi'].rate():.2f}x" if have_vhdi else "", "info"))
        if "ours_misaligned" in res:
            mis = res["ours_misaligned"]
            rows.append(Row("", f"  ours, buffer at page+{MISALIGN}", mbps(mis), mbps(res["vhdi"]) if have_vhdi else "",
                            f"{mis.rate() / res['vhdi'].rate():.2f}x" if have_vhdi else "", "info"))

    # --- random -----------------------------------------------------------------------------------------
    print("measuring rand-4K ...", flush=True)
    blocks = img.size // 4096
    offsets = (rng.integers(0, blocks, args.random_count) * 4096).tolist()
    cases = {
        "raw": lambda: rand_raw(img.raw, offsets),
        "ours": lambda: rand_ours(img.dense, offsets),
        "ours_into": lambda: rand_ours_readinto(img.dense, offsets),
    }
    if have_vhdi:
        cases["vhdi"] = lambda: rand_vhdi(img.dense, offsets)
    res = interleaved(cases, args.reps, {k: len(offsets) for k in cases})
    rows.append(Row("rand-4K", "os.pread raw file", opsps(res["raw"]), f"median {opsps(res['raw'], 'median')}", "", "info"))
    if have_vhdi:
        ratio = res["ours"].rate() / res["vhdi"].rate()
        missed, label_ = versus(ratio)
        failed |= missed
        rows.append(Row("rand-4K", "seek+read vs pyvhdi", opsps(res["ours"]), opsps(res["vhdi"]), f"{ratio:.2f}x", label_))
        rows.append(Row("", "  (medians)", opsps(res["ours"], "median"), opsps(res["vhdi"], "median"),
                        f"{res['ours'].rate('median') / res['vhdi'].rate('median'):.2f}x", ""))
        rows.append(Row("", "  seek+readinto", opsps(res["ours_into"]), opsps(res["vhdi"]),
                        f"{res['ours_into'].rate() / res['vhdi'].rate():.2f}x", "info"))
    rows.append(Row("", "  ours / raw pread", "", "", f"{res['ours'].rate() / res['raw'].rate():.2f}x", "info"))

    # --- qemu-img and cat ---------------------------------------------------------------------------------
    if not args.skip_qemu:
        print("measuring qemu-img and cat ...", flush=True)
        cases = {
            "cat": lambda: timed_cmd(["cat", str(img.raw)]),
            "qemu": lambda: qemu_read(img.dense, img.size),
            "ours": lambda: seq_ours(img.dense, MiB),
        }
        res = interleaved(cases, args.reps, {k: img.size for k in cases})
        rows.append(Row("whole-image", "qemu-img convert vs cat", mbps(res["qemu"]), mbps(res["cat"]),
                        f"{res['qemu'].rate() / res['cat'].rate():.2f}x", "info"))
        rows.append(Row("", "ours (1 MiB) vs cat", mbps(res["ours"]), mbps(res["cat"]),
                        f"{res['ours'].rate() / res['cat'].rate():.2f}x", "info"))

    # --- sparse -------------------------------------------------------------------------------------------
    if not args.skip_sparse:
        print("measuring sparse ...", flush=True)
        zero_bytes = img.sparse_size - sparse_alloc
        cases = {
            "full": lambda: seq_ours(img.sparse, MiB),
            "alloc": lambda: alloc_only_ours(img.sparse, MiB),
            "raw": lambda: seq_raw(img.sparse_raw, MiB),
            "memset": lambda: memset_time(zero_bytes, MiB),
        }
        if have_vhdi:
            cases["vhdi"] = lambda: seq_vhdi(img.sparse, MiB)
        res = interleaved(cases, args.reps, {k: img.sparse_size for k in cases})
        full, alloc, memset = res["full"].best(), res["alloc"].best(), res["memset"].best()
        budget = 1.5 * (alloc + memset)
        ok = full <= budget
        failed |= not ok
        rows.append(Row("sparse-full", "full read (1 MiB readinto)", f"{full:.3f} s", f"budget {budget:.3f} s",
                        f"{full / alloc:.1f}x alloc", verdict(ok)))
        rows.append(Row("", f"  allocated part only ({human(sparse_alloc)})", f"{alloc:.3f} s",
                        f"memset {memset:.3f} s", "", "info"))
        rows.append(Row("", "  full read vs raw sparse file", mbps(res["full"]), mbps(res["raw"]),
                        f"{res['full'].rate() / res['raw'].rate():.2f}x", "info"))
        if have_vhdi:
            rows.append(Row("", "  full read vs pyvhdi", mbps(res["full"]), mbps(res["vhdi"]),
                            f"{res['full'].rate() / res['vhdi'].rate():.2f}x", "info"))

        print("measuring sparse-copy ...", flush=True)
        copy_dir = copy_folder(args, work, max(sparse_alloc, dense_alloc))
        copy_dst = copy_dir / f"vhdx-bench-copy-{os.getpid()}.out"
        cases = {
            "dense": lambda: extents_copy(img.dense, copy_dst, MiB),
            "sparse": lambda: extents_copy(img.sparse, copy_dst, MiB),
        }
        if not args.skip_qemu:
            cases["qemu"] = lambda: qemu_copy(img.sparse, copy_dst)
        res = interleaved(cases, args.reps, {"dense": dense_alloc, "sparse": sparse_alloc, "qemu": sparse_alloc})
        per_byte = res["dense"].best() / dense_alloc
        budget = 1.5 * per_byte * sparse_alloc + 0.05
        got = res["sparse"].best()
        ok = got <= budget
        failed |= not ok
        rows.append(Row("sparse-copy", f"extents() copy to a file in {copy_dir}", f"{got:.3f} s", f"budget {budget:.3f} s",
                        f"{got / (per_byte * sparse_alloc):.2f}x dense", verdict(ok)))
        if "qemu" in res:
            rows.append(Row("", "  vs qemu-img convert -O raw", f"{got:.3f} s", f"{res['qemu'].best():.3f} s",
                            f"{res['qemu'].best() / got:.2f}x faster", "info"))

    # --- open of a huge empty image -------------------------------------------------------------------------
    print("measuring open-64T ...", flush=True)
    open_times(img.big, 2)  # warm-up
    times = open_times(img.big, args.open_reps)
    med, best = statistics.median(times), min(times)
    ok = med < 0.020
    failed |= not ok
    other = ""
    ratio = ""
    if have_vhdi:
        vt = statistics.median(open_times_vhdi(img.big, args.open_reps))
        other = f"pyvhdi {vt * 1e3:.1f} ms (lazy BAT)"
        ratio = f"{vt / med:.2f}x"
    rows.append(Row("open-64T", f"vhdx.open median (best {best * 1e3:.1f} ms)", f"{med * 1e3:.1f} ms", other, ratio,
                    verdict(ok)))
    peak, current, rss_delta, entries = open_memory(img.big)
    ok = entries > 0 and peak / entries <= 64
    failed |= not ok
    rows.append(Row("", f"memory per BAT entry ({entries:,} entries)", f"peak {peak / max(entries, 1):.1f} B",
                    f"kept {current / max(entries, 1):.1f} B, RSS +{rss_delta / max(entries, 1):.1f} B", "", verdict(ok)))

    print()
    print_table(rows, "reference")
    print()
    print("ratio = ours / reference (above 1 means ours is faster), except where noted; "
          "best of the repetitions unless marked median;")
    print(f"TIE = within {1 - TIE_BAND:.0%} of the reference (both bound by the same kernel copy; not counted as a miss)")
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
