"""vhdx.ops.convert: raw <-> VHDX, dynamic <-> fixed, block and sector size changes, chain
flattening, streams, sparseness, crash-safe placement of the result.

Oracles: the source bytes themselves (a raw file made here from a seeded generator, or a model of
the writes made through ``vhdx.create``), compared with what the result reads through us, through
``qemu-img compare`` (qemu cannot open 4096-byte-sector VHDX, so those go through libvhdi), and
``qemu-img check`` for the structure. Which blocks must be allocated is computed from the source
bytes (a block is needed exactly when it holds a non-zero byte); sparseness from ``st_blocks``.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import WriteModel, file_digest, require_module, require_tool, run
from hypothesis import given
from hypothesis import strategies as st

import vhdx
from vhdx.engine import source as fileio
from vhdx.ops import ConvertResult, Progress, convert
from vhdx.ops.convert import COPY_CHUNK, ZERO_GRANULE, nonzero_runs, windows

KiB, MiB = 1 << 10, 1 << 20
SIZE = 24 * MiB


# --- sources -------------------------------------------------------------------------------------------
def make_raw(path: Path, size: int = SIZE, seed: int = 7) -> bytes:
    """A sparse raw image with data, explicit zeros (stored but zero) and holes; returns its bytes.

    Layout in 1 MiB blocks: 0 partly data; 2 all data; 3 stored zeros; 5 one non-zero byte;
    8.5-10.25 data across block edges; 14-16 stored zeros; the last 4 KiB data.
    """
    rng = np.random.default_rng(seed)
    content = bytearray(size)
    pieces: list[tuple[int, bytes]] = [
        (0, rng.bytes(100 * KiB)),
        (2 * MiB, rng.bytes(MiB)),
        (3 * MiB, bytes(MiB)),
        (5 * MiB + 777, b"\x01"),
        (8 * MiB + MiB // 2, rng.bytes(MiB + 3 * MiB // 4)),
        (14 * MiB, bytes(2 * MiB)),
        (size - 4 * KiB, rng.bytes(4 * KiB)),
    ]
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in pieces:
            f.seek(offset)
            f.write(data)
            content[offset : offset + len(data)] = data
    return bytes(content)


def needed_blocks(content: bytes, block_size: int) -> int:
    """Blocks of ``block_size`` that hold a non-zero byte (what a dynamic image must allocate)."""
    arr = np.frombuffer(content, dtype=np.uint8)
    pad = (-len(arr)) % block_size
    if pad:
        arr = np.concatenate([arr, np.zeros(pad, np.uint8)])
    return int(np.count_nonzero(arr.reshape(-1, block_size).any(axis=1)))


def read_vhdx(path: Path, **kwargs: object) -> bytes:
    with vhdx.open(path, **kwargs) as disk:  # type: ignore[arg-type]
        return disk.read()


def read_libvhdi(path: Path) -> bytes:
    pyvhdi = require_module("pyvhdi")
    f = pyvhdi.file()
    f.open(str(path))
    try:
        size = f.get_media_size()
        out = bytearray()
        while len(out) < size:
            out += f.read_buffer_at_offset(min(4 * MiB, size - len(out)), len(out))
        return bytes(out)
    finally:
        f.close()


def qemu_compare(a: Path, fmt_a: str, b: Path, fmt_b: str) -> None:
    require_tool("qemu-img")
    got = run("qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b), check=False)
    assert got.returncode == 0, got.stdout + got.stderr


def qemu_check(path: Path) -> None:
    require_tool("qemu-img")
    got = run("qemu-img", "check", "-f", "vhdx", str(path), check=False)
    assert got.returncode == 0, got.stdout + got.stderr


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


@pytest.fixture()
def raw_source(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "source.raw"
    return path, make_raw(path)


# --- raw <-> VHDX --------------------------------------------------------------------------------------
@pytest.mark.parametrize("block_size", [MiB, 2 * MiB, 32 * MiB])
def test_raw_to_dynamic(tmp_path: Path, raw_source: tuple[Path, bytes], block_size: int) -> None:
    src, content = raw_source
    dst = tmp_path / "out.vhdx"
    result = convert(src, dst, block_size=block_size)
    assert read_vhdx(dst) == content
    qemu_compare(src, "raw", dst, "vhdx")
    qemu_check(dst)
    with vhdx.open(dst) as disk:
        info = disk.info()
        assert (disk.disk_type, disk.block_size, disk.size) == ("dynamic", block_size, SIZE)
        assert info.allocated_blocks == needed_blocks(content, block_size)
    assert result.blocks_allocated == needed_blocks(content, block_size)
    assert (result.source_format, result.destination_format, result.disk_type) == ("raw", "vhdx", "dynamic")
    # Every page holding data is written, and nothing in a block without data.
    assert needed_blocks(content, 4 * KiB) * 4 * KiB <= result.bytes_written
    assert result.bytes_written <= needed_blocks(content, block_size) * block_size
    assert result.file_size_after == os.path.getsize(dst)
    assert result.file_size_before == SIZE


def test_raw_to_fixed_is_sparse(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    src, content = raw_source
    dst = tmp_path / "fixed.vhdx"
    result = convert(src, dst, disk_type="fixed", block_size=MiB)
    assert read_vhdx(dst) == content
    qemu_compare(src, "raw", dst, "vhdx")
    qemu_check(dst)
    with vhdx.open(dst) as disk:
        assert disk.disk_type == "fixed"
        assert disk.info().allocated_blocks == SIZE // MiB == result.blocks_allocated
    # The payload is a sparse file: far less than the virtual size occupies the file system.
    st = os.stat(dst)
    if st.st_blocks * 512 < st.st_size:  # the file system supports holes at all
        assert st.st_blocks * 512 < SIZE // 2


@pytest.mark.parametrize("first,second", [("dynamic", "fixed"), ("fixed", "dynamic")])
def test_dynamic_fixed_round_trip(tmp_path: Path, raw_source: tuple[Path, bytes], first: str, second: str) -> None:
    src, content = raw_source
    a, b = tmp_path / "a.vhdx", tmp_path / "b.vhdx"
    convert(src, a, disk_type=first, block_size=MiB)
    result = convert(a, b, disk_type=second)
    assert result.block_size == MiB  # the source's block size is kept by default
    assert read_vhdx(b) == content
    qemu_compare(a, "vhdx", b, "vhdx")
    qemu_compare(src, "raw", b, "vhdx")
    qemu_check(b)
    with vhdx.open(b) as disk:
        assert disk.disk_type == second
        expected = SIZE // MiB if second == "fixed" else needed_blocks(content, MiB)
        assert disk.info().allocated_blocks == expected


@pytest.mark.parametrize("old,new", [(MiB, 32 * MiB), (32 * MiB, MiB), (2 * MiB, 8 * MiB)])
def test_block_size_change(tmp_path: Path, raw_source: tuple[Path, bytes], old: int, new: int) -> None:
    src, content = raw_source
    a, b = tmp_path / "a.vhdx", tmp_path / "b.vhdx"
    convert(src, a, block_size=old)
    convert(a, b, block_size=new)
    with vhdx.open(b) as disk:
        assert disk.block_size == new
        assert disk.info().allocated_blocks == needed_blocks(content, new)
    assert read_vhdx(b) == content
    qemu_compare(a, "vhdx", b, "vhdx")
    qemu_check(b)


def test_logical_sector_size_512_to_4096_and_back(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    src, content = raw_source
    a, b, c = tmp_path / "a512.vhdx", tmp_path / "b4k.vhdx", tmp_path / "c512.vhdx"
    convert(src, a, block_size=MiB)
    convert(a, b, logical_sector_size=4096)
    with vhdx.open(b) as disk:
        assert (disk.logical_sector_size, disk.block_size) == (4096, MiB)
    assert read_vhdx(b) == content
    assert read_libvhdi(b) == content  # qemu cannot open 4096-byte-sector VHDX
    convert(b, c, logical_sector_size=512, physical_sector_size=512)
    with vhdx.open(c) as disk:
        assert (disk.logical_sector_size, disk.physical_sector_size) == (512, 512)
    qemu_compare(src, "raw", c, "vhdx")
    qemu_check(c)


def test_raw_length_not_a_sector_multiple_is_padded(tmp_path: Path) -> None:
    src = tmp_path / "odd.raw"
    data = np.random.default_rng(3).bytes(MiB + 100)
    src.write_bytes(data)
    dst = tmp_path / "odd.vhdx"
    result = convert(src, dst, logical_sector_size=4096)
    assert result.virtual_size == MiB + 4096
    assert read_vhdx(dst) == data + bytes(4096 - 100)


def test_size_larger_than_source(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    src, content = raw_source
    dst = tmp_path / "big.vhdx"
    convert(src, dst, size=SIZE + 8 * MiB, block_size=MiB)
    with vhdx.open(dst) as disk:
        assert disk.size == SIZE + 8 * MiB
        assert disk.read() == content + bytes(8 * MiB)
        assert disk.info().allocated_blocks == needed_blocks(content, MiB)
    with pytest.raises(ValueError, match="smaller than the source"):
        convert(src, tmp_path / "small.vhdx", size=SIZE - MiB)


def test_vhdx_to_raw_is_sparse(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    src, content = raw_source
    image, out = tmp_path / "a.vhdx", tmp_path / "out.raw"
    convert(src, image, block_size=MiB)
    result = convert(image, out)
    assert out.read_bytes() == content
    assert os.path.getsize(out) == SIZE == result.file_size_after
    nonzero_pages = needed_blocks(content, 4 * KiB)
    assert result.bytes_written == nonzero_pages * 4 * KiB  # only pages holding data were written
    st = os.stat(out)
    probe = tmp_path / "probe"
    with open(probe, "wb") as f:
        f.truncate(SIZE)
    if os.stat(probe).st_blocks == 0:  # the file system keeps holes
        assert st.st_blocks * 512 <= (nonzero_pages + 16) * 4 * KiB
        assert result.actual_size_after == st.st_blocks * 512


def test_fixed_vhdx_to_raw_skips_zero_data(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    # A fixed image says every block holds data; the zeros among them are still not written.
    src, content = raw_source
    image, out = tmp_path / "fixed.vhdx", tmp_path / "out.raw"
    convert(src, image, disk_type="fixed", block_size=MiB)
    result = convert(image, out)
    assert out.read_bytes() == content
    assert result.bytes_read == SIZE
    assert result.bytes_written == needed_blocks(content, 4 * KiB) * 4 * KiB


def test_raw_to_raw(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    src, content = raw_source
    out = tmp_path / "copy.img"
    result = convert(src, out)
    assert out.read_bytes() == content
    assert result.bytes_read < SIZE  # the holes of the sparse source were not read (SEEK_HOLE)
    assert result.blocks_allocated == 0 and result.disk_type is None


def test_open_virtual_disk_as_source(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    src, content = raw_source
    image, out = tmp_path / "a.vhdx", tmp_path / "out.raw"
    convert(src, image, block_size=MiB)
    with vhdx.open(image) as disk:
        disk.seek(12345)
        result = convert(disk, out)
        assert not disk.closed and disk.tell() == 12345  # the caller's disk, left as it was
        assert result.source == disk.name and result.source_format == "vhdx"
    assert out.read_bytes() == content


# --- chains --------------------------------------------------------------------------------------------
def make_chain(folder: Path) -> tuple[Path, WriteModel, int]:
    """base (dynamic, 4 MiB blocks) <- child (2 MiB blocks) <- grandchild (1 MiB blocks), with
    overlapping writes at every level, zeroing and unaligned sector writes; returns the top and a
    model of its content and the number of layers."""
    rng = np.random.default_rng(11)
    size = 40 * MiB
    model = WriteModel(size)
    base, child, top = folder / "base.vhdx", folder / "child.avhdx", folder / "top.avhdx"

    def write(disk: vhdx.VirtualDisk, offset: int, length: int) -> None:
        data = rng.bytes(length)
        disk.pwrite(offset, data)
        model.write(offset, data)

    with vhdx.create(base, size, block_size=4 * MiB) as d:
        write(d, 0, 6 * MiB)
        write(d, 20 * MiB, 4 * MiB)
        write(d, size - 512, 512)
    with vhdx.create(child, parent=base, block_size=2 * MiB) as d:
        write(d, 512, 1536)  # partial sectors of a block: sector bitmap
        write(d, 5 * MiB, 3 * MiB)
        d.write_zeroes(20 * MiB, 2 * MiB)  # a ZERO block hides parent data
        model.fill(20 * MiB, 2 * MiB, 0)
    with vhdx.create(top, parent=child, block_size=MiB) as d:
        write(d, 7 * MiB + 4096, 8192)
        write(d, 30 * MiB, MiB)
    return top, model, 3


def test_chain_flattened(tmp_path: Path) -> None:
    top, model, layers = make_chain(tmp_path)
    expected = model.full()
    flat = tmp_path / "flat.vhdx"
    result = convert(top, flat)
    assert result.source_layers == layers
    assert result.block_size == 4 * MiB  # the base's block size, not the differencing top's
    with vhdx.open(flat) as disk:
        assert disk.disk_type == "dynamic" and disk.parent is None
        assert disk.read() == expected
        assert disk.info().allocated_blocks == needed_blocks(expected, 4 * MiB)
    assert read_vhdx(top) == expected  # the chain itself is untouched and agrees
    reference = tmp_path / "expected.raw"
    reference.write_bytes(expected)
    qemu_compare(reference, "raw", flat, "vhdx")
    qemu_check(flat)
    assert read_libvhdi(flat) == expected
    assert result.file_size_before == sum(os.path.getsize(tmp_path / n) for n in ("base.vhdx", "child.avhdx",
                                                                                  "top.avhdx"))


def test_chain_to_raw_with_parent_search(tmp_path: Path) -> None:
    chain_dir = tmp_path / "chain"
    chain_dir.mkdir()
    top, model, _ = make_chain(chain_dir)
    # Move the parents away from the paths the top records: they are found through parent_search.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("base.vhdx", "child.avhdx"):
        (chain_dir / name).rename(elsewhere / name)
    out = tmp_path / "flat.raw"
    with pytest.raises(vhdx.ParentNotFoundError):
        convert(top, out)
    assert not out.exists()
    convert(top, out, parent_search=[elsewhere])
    assert out.read_bytes() == model.full()


# --- streams -------------------------------------------------------------------------------------------
class OneWay(io.RawIOBase):
    """A pipe-like stream: reads in small pieces, cannot seek."""

    def __init__(self, data: bytes, piece: int = 100_000) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._piece = piece

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = min(len(b), self._piece, len(self._data) - self._pos)
        b[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_stream_to_vhdx_with_size(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    _, content = raw_source
    dst = tmp_path / "s.vhdx"
    result = convert(OneWay(content), dst, size=SIZE, block_size=MiB)
    assert result.source == "-" and result.file_size_before is None
    assert read_vhdx(dst) == content
    assert result.blocks_allocated == needed_blocks(content, MiB)
    qemu_check(dst)
    assert leftovers(tmp_path, {"source.raw", "s.vhdx"}) == []


def test_stream_to_vhdx_without_size_spools(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    _, content = raw_source
    dst = tmp_path / "s.vhdx"
    seen: list[Progress] = []
    result = convert(OneWay(content[: SIZE - 100]), dst, block_size=MiB, progress=seen.append)  # not a sector multiple
    assert result.virtual_size == SIZE  # rounded up to a whole sector
    # Two phases: reading the stream (length unknown), then the conversion from 0 to the size.
    assert seen[0] == Progress("convert", 0, None) and Progress("convert", 0, SIZE) in seen
    assert seen[-1] == Progress("convert", SIZE, SIZE)
    assert read_vhdx(dst) == content[: SIZE - 100] + bytes(100)
    assert leftovers(tmp_path, {"source.raw", "s.vhdx"}) == []  # the spool file is gone


def test_stream_longer_than_size_fails_cleanly(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    _, content = raw_source
    dst = tmp_path / "s.vhdx"
    with pytest.raises(ValueError, match="longer than the size"):
        convert(OneWay(content), dst, size=SIZE - MiB)
    assert leftovers(tmp_path, {"source.raw"}) == []


def test_stream_shorter_than_size_reads_zero_after(tmp_path: Path) -> None:
    data = b"\xab" * (3 * MiB + 512)
    out = tmp_path / "s.raw"
    convert(OneWay(data), out, size=8 * MiB)
    assert out.read_bytes() == data + bytes(8 * MiB - len(data))


def test_vhdx_to_stream_writes_every_byte(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    src, content = raw_source
    image = tmp_path / "a.vhdx"
    convert(src, image, block_size=MiB)
    sink = io.BytesIO()
    result = convert(image, sink)
    assert sink.getvalue() == content
    assert result.destination == "-" and result.file_size_after is None
    assert result.bytes_written == SIZE


def test_stream_to_stream(raw_source: tuple[Path, bytes]) -> None:
    _, content = raw_source
    sink = io.BytesIO()
    convert(OneWay(content), sink)
    assert sink.getvalue() == content


# --- placement of the result -----------------------------------------------------------------------------
def test_existing_destination_is_not_overwritten(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    src, content = raw_source
    dst = tmp_path / "out.vhdx"
    dst.write_bytes(b"precious")
    for fmt in ("vhdx", "raw"):
        with pytest.raises(FileExistsError):
            convert(src, dst, dst_format=fmt)
        assert dst.read_bytes() == b"precious"
    assert leftovers(tmp_path, {"source.raw", "out.vhdx"}) == []
    convert(src, dst, overwrite=True)
    assert read_vhdx(dst) == content


class Hooked(OneWay):
    """A stream that calls ``hook(bytes so far)`` after every read."""

    def __init__(self, data: bytes, hook: Callable[[int], None]) -> None:
        super().__init__(data)
        self._hook = hook

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        n = super().readinto(b)
        self._hook(self._pos)
        return n


@pytest.mark.parametrize("dst_name", ["out.vhdx", "out.raw"])
def test_destination_appearing_meanwhile_is_not_replaced(tmp_path: Path, raw_source: tuple[Path, bytes],
                                                         dst_name: str) -> None:
    _, content = raw_source
    dst = tmp_path / dst_name

    def appear(done: int) -> None:
        if done > MiB and not dst.exists():
            dst.write_bytes(b"someone else's")

    with pytest.raises(FileExistsError):
        convert(Hooked(content, appear), dst, size=SIZE)
    assert dst.read_bytes() == b"someone else's"
    assert leftovers(tmp_path, {"source.raw", dst_name}) == []


@pytest.mark.parametrize("dst_name", ["out.vhdx", "out.raw", "spooled.vhdx"])
def test_source_failing_mid_copy_leaves_nothing(tmp_path: Path, raw_source: tuple[Path, bytes],
                                                dst_name: str) -> None:
    _, content = raw_source

    def fail(done: int) -> None:
        if done > 5 * MiB:
            raise OSError(5, "Input/output error")

    with pytest.raises(OSError, match="Input/output"):
        convert(Hooked(content, fail), tmp_path / dst_name, size=None if dst_name.startswith("spool") else SIZE)
    assert leftovers(tmp_path, {"source.raw"}) == []


@pytest.mark.parametrize("dst_name", ["out.vhdx", "out.raw"])
def test_destination_failing_mid_copy_leaves_nothing(tmp_path: Path, raw_source: tuple[Path, bytes],
                                                     dst_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    src, _ = raw_source
    before = file_digest(src)
    calls = 0

    def full(*args: object) -> int:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise OSError(28, "No space left on device")
        return real(*args)  # type: ignore[operator]

    if dst_name.endswith(".vhdx"):
        real = vhdx.VirtualDisk.pwrite
        monkeypatch.setattr(vhdx.VirtualDisk, "pwrite", full)
    else:
        real = fileio.pwrite  # every positional write of the package goes through it
        monkeypatch.setattr(fileio, "pwrite", full)
    with pytest.raises(OSError, match="No space"):
        convert(src, tmp_path / dst_name, block_size=MiB if dst_name.endswith("vhdx") else None)
    monkeypatch.undo()
    assert calls > 2
    assert leftovers(tmp_path, {"source.raw"}) == []
    assert file_digest(src) == before


def test_invalid_arguments(tmp_path: Path, raw_source: tuple[Path, bytes]) -> None:
    src, _ = raw_source
    cases: list[tuple[dict[str, object], str]] = [
        (dict(dst_format="raw", disk_type="fixed"), "VHDX output only"),
        (dict(disk_type="differencing"), "disk type"),
        (dict(block_size=3 * MiB), "block size"),
        (dict(logical_sector_size=1024), "sector size"),
        (dict(src_format="qcow2"), "format"),
        (dict(preallocate=True), "fixed"),
        (dict(size=0), "size"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            convert(src, tmp_path / "out.vhdx", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stream"):
        convert(src, io.BytesIO(), dst_format="vhdx")
    with pytest.raises(ValueError, match="stream"):
        convert(io.BytesIO(b"x" * 512), tmp_path / "out.vhdx", src_format="vhdx")
    with pytest.raises(IsADirectoryError):
        convert(src, tmp_path)
    with pytest.raises(vhdx.VhdxError):
        convert(src, tmp_path / "out.raw", src_format="vhdx")  # a raw file is not a VHDX
    assert leftovers(tmp_path, {"source.raw"}) == []


# --- progress ---------------------------------------------------------------------------------------------
def test_progress_reports(tmp_path: Path) -> None:
    src = tmp_path / "big.raw"
    with open(src, "wb") as f:  # data in every copy window, so there are many steps
        for i in range(6):
            f.seek(i * COPY_CHUNK)
            f.write(b"\x01" * 4096)
        f.truncate(6 * COPY_CHUNK)
    seen: list[Progress] = []
    result: ConvertResult = convert(src, tmp_path / "out.vhdx", progress=seen.append)
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == result.virtual_size
    assert all(p.operation == "convert" and p.unit == "bytes" for p in seen)
    assert [p.done for p in seen] == sorted(p.done for p in seen)


# --- the pieces ---------------------------------------------------------------------------------------------
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(1, 3 * ZERO_GRANULE), st.integers(1, 255)), max_size=8),
       st.integers(1, 64 * ZERO_GRANULE), st.sampled_from([ZERO_GRANULE, 16 * KiB, 64 * KiB]))
def test_nonzero_runs_cover_exactly_the_data(writes: list[tuple[int, int, int]], length: int, min_hole: int) -> None:
    buf = bytearray(64 * ZERO_GRANULE + 3 * ZERO_GRANULE)
    for page, n, byte in writes:
        offset = (page * ZERO_GRANULE + n * 7) % length
        end = min(length, offset + n)
        buf[offset:end] = bytes([byte]) * (end - offset)
    data = bytes(buf[:length])
    runs = nonzero_runs(data, length, ZERO_GRANULE, min_hole)  # read-only input: it must not write
    covered = bytearray(length)
    prev_end = None
    for a, b in runs:
        assert 0 <= a < b <= length and a % ZERO_GRANULE == 0
        assert b % ZERO_GRANULE == 0 or b == length
        if prev_end is not None:
            assert a - prev_end >= min_hole  # shorter holes are absorbed
        prev_end = b
        covered[a:b] = b"\x01" * (b - a)
    for i, value in enumerate(data):  # every non-zero byte is inside a run
        if value:
            assert covered[i]
    # ... and every run starts and ends with a granule that holds data
    for a, b in runs:
        assert any(data[a : a + ZERO_GRANULE]) and any(data[(b - 1) // ZERO_GRANULE * ZERO_GRANULE : b])


@given(st.lists(st.tuples(st.integers(0, 1 << 26), st.integers(1, 1 << 24)), max_size=12))
def test_windows_cover_the_ranges(pairs: list[tuple[int, int]]) -> None:
    ranges = []
    pos = 0
    for gap, length in pairs:
        ranges.append((pos + gap, pos + gap + length))
        pos += gap + length
    wins = list(windows(ranges, COPY_CHUNK, 256 * KiB))
    for a, b in wins:
        assert a < b and b - a <= COPY_CHUNK and a // COPY_CHUNK == (b - 1) // COPY_CHUNK
    assert all(w1[1] <= w2[0] for w1, w2 in itertools.pairwise(wins))
    for a, b in ranges:  # every input byte is inside a window
        inside = sum(min(b, wb) - max(a, wa) for wa, wb in wins if wa < b and a < wb)
        assert inside == b - a
