"""Micro-benchmarks of the write path (pytest-benchmark). Not part of the test run: run them with

    .venv/bin/python -m pytest benchmarks/bench_write.py                 # timings table
    .venv/bin/python -m pytest benchmarks/bench_write.py --benchmark-disable   # one pass, as a smoke run

Every round writes into a fresh image made by vhdx.create in the untimed setup. The images live
on /dev/shm when there is one (a tmpfs: fsync is almost free there, so the numbers show the
library's own cost rather than the disk's), else in pytest's temporary folder. The benchmarks
only check that the work was done (bytes read back, journal counters), never how long it took:
benchmarks/compare_write.py is the side-by-side comparison against qemu-img and qemu-io.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vhdx

pytestmark = pytest.mark.benchmark

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
SEQ_SIZE = 256 * MiB
RAND_DISK = 8 * GiB
RANDOM_WRITES = 2000
FLUSH_EVERY = 100
ROUNDS = 5


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 4 * SEQ_SIZE:
        with tempfile.TemporaryDirectory(prefix="vhdx-bench-write-", dir=shm) as tmp:
            yield Path(tmp)
    else:
        yield tmp_path_factory.mktemp("bench-write")


@pytest.fixture(scope="module")
def source_data() -> memoryview:
    return memoryview(np.random.default_rng(11).bytes(SEQ_SIZE))


def _fresh(path: Path, size: int, **kwargs: Any) -> vhdx.VirtualDisk:
    path.unlink(missing_ok=True)
    return vhdx.create(path, size, **kwargs)


def _fresh_closed(path: Path, size: int, **kwargs: Any) -> tuple[tuple[Path], dict[str, Any]]:
    _fresh(path, size, **kwargs).close()
    return (path,), {}


def _offsets(seed: int, count: int) -> list[int]:
    rnd = random.Random(seed)
    return [rnd.randrange(RAND_DISK // (4 * KiB)) * 4 * KiB for _ in range(count)]


@pytest.mark.parametrize("request_size", [MiB, 32 * MiB], ids=["1MiB", "32MiB"])
def test_sequential_write_new_dynamic(benchmark, work: Path, source_data: memoryview, request_size: int) -> None:
    """vhdx.create, SEQ_SIZE bytes in request_size writes, close (its flush included)."""
    path = work / "seq.vhdx"

    def write_all(path: Path) -> int:
        with vhdx.create(path, SEQ_SIZE) as d:
            for off in range(0, SEQ_SIZE, request_size):
                d.write(source_data[off : off + request_size])
            return d.tell()

    def setup() -> tuple[tuple[Path], dict[str, Any]]:
        path.unlink(missing_ok=True)
        return (path,), {}

    assert benchmark.pedantic(write_all, setup=setup, rounds=ROUNDS) == SEQ_SIZE
    with vhdx.open(path) as d:
        for off in (0, SEQ_SIZE // 3 // 4096 * 4096, SEQ_SIZE - 4096):
            assert d.pread(off, 4096) == source_data[off : off + 4096]


@pytest.mark.parametrize("block_size", [32 * MiB, MiB], ids=["32MiB-blocks", "1MiB-blocks"])
def test_random_4k_writes_with_flushes(benchmark, work: Path, block_size: int) -> None:
    """open r+b, RANDOM_WRITES 4 KiB writes with a flush every FLUSH_EVERY, close."""
    path = work / "rand.vhdx"
    offsets = _offsets(5, RANDOM_WRITES)
    data = [bytes([1 + i % 255]) * 4096 for i in range(RANDOM_WRITES)]
    stats: list[Any] = []

    def write_many(path: Path) -> int:
        d = vhdx.open(path, "r+b")
        for i, off in enumerate(offsets, 1):
            d.pwrite(off, data[i - 1])
            if i % FLUSH_EVERY == 0:
                d.flush()
        stats.append(d._engine.journal.stats)
        d.close()
        return i

    assert benchmark.pedantic(write_many, setup=lambda: _fresh_closed(path, RAND_DISK, block_size=block_size),
                              rounds=ROUNDS) == RANDOM_WRITES
    assert stats[-1].commits >= 1
    expect = dict(zip(offsets, data))  # later writes to an offset win
    with vhdx.open(path) as d:
        for off in offsets[:: RANDOM_WRITES // 50]:
            assert d.pread(off, 4096) == expect[off]


def test_rewrite_allocated_4k(benchmark, work: Path) -> None:
    """4 KiB writes into blocks that already have storage: no metadata, the plainest path."""
    path = work / "rewrite.vhdx"
    size = 256 * MiB
    with _fresh(path, size, block_size=32 * MiB) as d:
        for off in range(0, size, 32 * MiB):
            d.pwrite(off, b"\xff" * 4096)
    rnd = random.Random(6)
    offsets = [rnd.randrange(size // 4096) * 4096 for _ in range(RANDOM_WRITES)]
    data = b"\x42" * 4096
    with vhdx.open(path, "r+b") as d:
        d.pwrite(0, data)  # the session's header update happens here, not in the timed part

        def rewrite() -> int:
            for off in offsets:
                d.pwrite(off, data)
            return d._engine.journal.stats.commits

        commits = benchmark(rewrite)
        assert commits == 0  # nothing was allocated, so nothing went through the log
        assert d.pread(offsets[-1], 4096) == data


@pytest.mark.parametrize("blocks", [16, 512])
def test_flush_commit(benchmark, work: Path, blocks: int) -> None:
    """flush() after one 4 KiB write into each of ``blocks`` new 1 MiB blocks spread over the
    disk: the payload sync, the log entry (build, write, sync) and the in-place apply. 64 GiB
    in 1 MiB blocks is 128 BAT sectors, so 512 blocks dirty all of them and 16 blocks 16."""
    path = work / "commit.vhdx"
    disk_size = 64 * GiB
    stride = disk_size // blocks
    holder: list[vhdx.VirtualDisk] = []

    def setup() -> tuple[tuple[vhdx.VirtualDisk], dict[str, Any]]:
        while holder:
            holder.pop().close()
        d = _fresh(path, disk_size, block_size=MiB)
        for b in range(blocks):
            d.pwrite(b * stride, b"\x33" * 4096)
        holder.append(d)
        return (d,), {}

    def flush(d: vhdx.VirtualDisk) -> int:
        d.flush()
        return d._engine.journal.stats.commits

    assert benchmark.pedantic(flush, setup=setup, rounds=ROUNDS) == 1
    d = holder.pop()
    stats = d._engine.journal.stats
    assert stats.entries >= 1 and stats.log_bytes > 0
    d.close()
    with vhdx.open(path) as d:
        assert d.pread((blocks - 1) * stride, 4096) == b"\x33" * 4096


def test_discard_whole_blocks(benchmark, work: Path) -> None:
    """discard() of 256 allocated 1 MiB blocks, then flush: BAT-only changes through the log."""
    path = work / "discard.vhdx"
    size = 256 * MiB

    def setup() -> tuple[tuple[Path], dict[str, Any]]:
        with _fresh(path, size, block_size=MiB) as d:
            for off in range(0, size, MiB):
                d.pwrite(off, b"\x77" * 4096)
        return (path,), {}

    def discard(path: Path) -> int:
        with vhdx.open(path, "r+b") as d:
            d.discard(0, size)
            d.flush()
            return d._engine.journal.stats.commits

    assert benchmark.pedantic(discard, setup=setup, rounds=ROUNDS) >= 1
    with vhdx.open(path) as d:
        assert {e.state for e in d.extents()} <= {"zero", "unallocated"}


def test_differencing_4k_writes(benchmark, work: Path) -> None:
    """4 KiB writes into a new differencing child (sector bitmap updates), flush every 100."""
    base = work / "diff-base.vhdx"
    with _fresh(base, 256 * MiB, block_size=2 * MiB) as d:
        d.pwrite(0, b"\x10" * MiB)
    child = work / "diff-child.avhdx"
    rnd = random.Random(8)
    offsets = [rnd.randrange(256 * MiB // 4096) * 4096 for _ in range(RANDOM_WRITES // 4)]

    def setup() -> tuple[tuple[Path], dict[str, Any]]:
        child.unlink(missing_ok=True)
        vhdx.create(child, parent=base).close()
        return (child,), {}

    def write_many(path: Path) -> int:
        with vhdx.open(path, "r+b") as d:
            for i, off in enumerate(offsets, 1):
                d.pwrite(off, b"\x22" * 4096)
                if i % FLUSH_EVERY == 0:
                    d.flush()
            return i

    assert benchmark.pedantic(write_many, setup=setup, rounds=ROUNDS) == len(offsets)
    with vhdx.open(child) as d:
        assert d.pread(offsets[0], 4096) == b"\x22" * 4096
        untouched = next(o for o in range(0, MiB, 4096) if o not in set(offsets))
        assert d.pread(untouched, 4096) == b"\x10" * 4096  # still the parent's bytes


if __name__ == "__main__":  # pragma: no cover - convenience
    raise SystemExit(pytest.main([os.path.abspath(__file__), *sys.argv[1:]]))
