"""Micro-benchmarks of the read path (pytest-benchmark). Not part of the test run: run them with

    .venv/bin/python -m pytest benchmarks/bench_read.py                 # timings table
    .venv/bin/python -m pytest benchmarks/bench_read.py --benchmark-disable   # one pass, as a smoke run

Images are built once per session with qemu-img (and vhdx.create for the differencing disk);
the benchmarks are skipped when qemu-img is missing. They only check that the work was done
(byte counts, extent coverage), never how long it took: benchmarks/compare_read.py is the
side-by-side comparison against libvhdi and qemu-img.
"""

from __future__ import annotations

import mmap
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import vhdx

pytestmark = pytest.mark.benchmark

MiB = 1 << 20
DENSE_SIZE = 256 * MiB
RANDOM_READS = 2000


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is needed to build the benchmark images")
    work = tmp_path_factory.mktemp("bench-images")
    rng = np.random.default_rng(7)
    raw = work / "dense.raw"
    raw.write_bytes(rng.bytes(DENSE_SIZE))
    dense = work / "dense.vhdx"
    _qemu_img("create", "-q", "-f", "vhdx", str(dense), str(DENSE_SIZE))
    _qemu_img("convert", "-n", "--target-is-zero", "-f", "raw", "-O", "vhdx", str(raw), str(dense))

    big = work / "empty-64T.vhdx"
    _qemu_img("create", "-q", "-f", "vhdx", str(big), "64T")

    # 64 GiB in 1 MiB blocks with every 16th block written: 4096 data runs among 65536 blocks.
    sparse = work / "sparse-64G.vhdx"
    _qemu_img("create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(sparse), "64G")
    writes: list[str] = []
    for block in range(0, 65536, 16):
        writes += ["-c", f"write -P 0x5a {block * MiB} 4k"]
    subprocess.run(["qemu-io", "-f", "vhdx", *writes, str(sparse)], check=True, capture_output=True)

    paths = {"raw": raw, "dense": dense, "big": big, "sparse": sparse}
    for p in paths.values():  # from the page cache from here on
        with open(p, "rb") as fh:
            while fh.read(16 * MiB):
                pass
    return paths


@pytest.fixture(scope="session")
def differencing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A differencing disk whose first block alternates present and absent sector runs."""
    create = getattr(vhdx, "create", None)
    if create is None:
        pytest.skip("vhdx.create is not available")
    work = tmp_path_factory.mktemp("bench-diff")
    base = work / "base.vhdx"
    create(base, 64 * MiB, block_size=2 * MiB).close()
    child = work / "child.avhdx"
    with create(child, parent=base) as d:
        sector = d.logical_sector_size
        for s in range(0, d.block_size // sector, 4):  # runs of 2 present then 2 absent sectors
            d.pwrite(s * sector, b"\x11" * (2 * sector))
    return child


@pytest.fixture
def dense_disk(images: dict[str, Path]) -> Iterator[vhdx.VirtualDisk]:
    with vhdx.open(images["dense"]) as d:
        yield d


def test_open_large_empty_image(benchmark, images: dict[str, Path]) -> None:
    def open_close() -> int:
        with vhdx.open(images["big"]) as d:
            return d.size

    assert benchmark(open_close) == 64 << 40


@pytest.mark.parametrize("request_size", [MiB, 32 * MiB], ids=["1MiB", "32MiB"])
def test_sequential_readinto(benchmark, dense_disk: vhdx.VirtualDisk, request_size: int) -> None:
    # Page-aligned, as compare_read.py explains: the kernel's copy into a buffer that starts just
    # past a page boundary (where a large bytearray usually does) can be several times slower.
    view = memoryview(mmap.mmap(-1, request_size))

    def read_all() -> int:
        dense_disk.seek(0)
        total = 0
        while n := dense_disk.readinto(view):
            total += n
        return total

    assert benchmark.pedantic(read_all, rounds=5, warmup_rounds=1) == DENSE_SIZE


def test_random_4k_read(benchmark, dense_disk: vhdx.VirtualDisk) -> None:
    rnd = random.Random(3)
    offsets = [rnd.randrange(DENSE_SIZE // 4096) * 4096 for _ in range(RANDOM_READS)]

    def read_many() -> int:
        total = 0
        for off in offsets:
            dense_disk.seek(off)
            total += len(dense_disk.read(4096))
        return total

    assert benchmark(read_many) == RANDOM_READS * 4096


def test_random_4k_readinto(benchmark, dense_disk: vhdx.VirtualDisk) -> None:
    rnd = random.Random(4)
    offsets = [rnd.randrange(DENSE_SIZE // 4096) * 4096 for _ in range(RANDOM_READS)]
    view = memoryview(bytearray(4096))

    def read_many() -> int:
        total = 0
        for off in offsets:
            dense_disk.seek(off)
            total += dense_disk.readinto(view)
        return total

    assert benchmark(read_many) == RANDOM_READS * 4096


def test_extents_big_sparse_image(benchmark, images: dict[str, Path]) -> None:
    with vhdx.open(images["sparse"]) as d:
        extents = benchmark(lambda: list(d.extents()))
        assert sum(e.length for e in extents) == d.size
        assert sum(1 for e in extents if e.state == "data") == 65536 // 16


def test_extents_huge_empty_image(benchmark, images: dict[str, Path]) -> None:
    with vhdx.open(images["big"]) as d:
        extents = benchmark(lambda: list(d.extents()))
        # One extent for the whole disk (qemu-img marks new blocks ZERO, others leave them NOT_PRESENT).
        assert [(e.virtual_offset, e.length) for e in extents] == [(0, d.size)]
        assert extents[0].state in ("zero", "unallocated")


def test_sector_bitmap_runs(benchmark, differencing: Path) -> None:
    with vhdx.open(differencing) as d:
        bitmaps = d._engine.bitmaps  # the engine's own object: this measures the library code
        assert bitmaps is not None
        sectors = d.block_size // d.logical_sector_size
        runs = benchmark(bitmaps.runs, 0, 0, sectors)
        assert len(runs) == sectors // 2
        assert runs[0] == (0, 2, True) and runs[1] == (2, 4, False)


def test_sector_bitmap_runs_uncached(benchmark, differencing: Path) -> None:
    with vhdx.open(differencing) as d:
        bitmaps = d._engine.bitmaps
        assert bitmaps is not None
        sectors = d.block_size // d.logical_sector_size

        def load_and_split() -> int:
            bitmaps.invalidate(0)
            return len(bitmaps.runs(0, 0, sectors))

        assert benchmark(load_and_split) == sectors // 2


def test_read_partially_present_block(benchmark, differencing: Path) -> None:
    with vhdx.open(differencing) as d:
        view = memoryview(bytearray(d.block_size))

        def read_block() -> int:
            d.seek(0)
            return d.readinto(view)

        assert benchmark(read_block) == d.block_size
        sector = d.logical_sector_size
        assert bytes(view[: 2 * sector]) == b"\x11" * (2 * sector)
        assert bytes(view[2 * sector : 4 * sector]) == bytes(2 * sector)


if __name__ == "__main__":  # pragma: no cover - convenience
    raise SystemExit(pytest.main([os.path.abspath(__file__), *sys.argv[1:]]))
