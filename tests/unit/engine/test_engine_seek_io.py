"""The seek-and-lock fallback for positional I/O (engine/source.py), used where the OS has no
pread/pwrite/preadv (Windows).

This machine has them, so the fallback is checked two ways: its three functions against the
positional ones on the same file (hypothesis, plus threads sharing one descriptor, which only
the lock keeps apart), and whole operations (create, write, read, convert both ways) run with
the fallback swapped in for the package's positional I/O, against the same operations run
normally.
"""

from __future__ import annotations

import hashlib
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vhdx
from vhdx.engine import source as fileio
from vhdx.ops.convert import convert

MiB = 1 << 20
SIZE = 3 * MiB + 777


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    path = tmp_path_factory.mktemp("seekio") / "data.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return str(path), data


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(0, SIZE + 100), length=st.integers(0, 2 * MiB))
def test_seeking_reads_equal_positional_reads(data_file, offset, length):
    fd = os.open(data_file[0], os.O_RDONLY)
    try:
        a, b = bytearray(length), bytearray(length)
        na = fileio._seeking_pread_into(fd, memoryview(a), offset)
        nb = os.preadv(fd, [memoryview(b)], offset) if length else 0
        assert na == nb and a[:na] == b[:nb]
        assert fileio._seeking_pread(fd, length, offset) == os.pread(fd, length, offset)
    finally:
        os.close(fd)


def test_seeking_writes_land_where_asked(tmp_path):
    path = tmp_path / "w.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.lseek(fd, 5, os.SEEK_SET)
        assert fileio._seeking_pwrite(fd, b"abc", 100) == 3
        fileio.pwrite_all(fd, memoryview(b"xyz"), 10)
        assert os.pread(fd, 200, 0) == bytes(10) + b"xyz" + bytes(87) + b"abc"
    finally:
        os.close(fd)


def test_threads_sharing_a_descriptor(tmp_path, data_file):
    """Without the lock, one thread's seek would move another's read: each thread checks its data."""
    fd = os.open(data_file[0], os.O_RDONLY)
    out = tmp_path / "copy.bin"
    wfd = os.open(out, os.O_RDWR | os.O_CREAT)
    errors: list[str] = []
    ranges: list[tuple[int, int]] = []

    def worker(k: int) -> None:
        for i in range(200):
            off = (k * 7919 + i * 104729) % (SIZE - 4096)
            buf = bytearray(4096)
            n = fileio._seeking_pread_into(fd, memoryview(buf), off)
            if bytes(buf[:n]) != data_file[1][off : off + n]:
                errors.append(f"thread {k} read {i} at {off}")
            fileio._seeking_pwrite(wfd, bytes(buf[:n]), off)
            ranges.append((off, n))

    try:
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        written = os.pread(wfd, SIZE, 0)
        assert len(ranges) == 800
        for off, n in ranges:  # each write landed at its own offset, not where another thread sought
            assert written[off : off + n] == data_file[1][off : off + n], off
    finally:
        os.close(fd)
        os.close(wfd)


@pytest.fixture
def seeking_io(monkeypatch):
    """Run the package with the fallback in place of pread/pwrite/preadv."""
    monkeypatch.setattr(fileio, "pread_into", fileio._seeking_pread_into)
    monkeypatch.setattr(fileio, "pread", fileio._seeking_pread)
    monkeypatch.setattr(fileio, "pwrite", fileio._seeking_pwrite)


def _round_trip(folder, data: bytes) -> dict[str, str]:
    """Create, write, read back and convert both ways; return the hashes seen at each step."""
    img = folder / "d.vhdx"
    with vhdx.create(img, 8 * MiB, block_size=MiB) as disk:
        disk.seek(MiB + 512)
        disk.write(data)
        disk.seek(6 * MiB)
        disk.write(data[: MiB // 2])
    seen = {}
    with vhdx.open(img) as disk:
        seen["read"] = hashlib.sha256(disk.read()).hexdigest()
        disk.seek(MiB + 512)
        assert disk.read(len(data)) == data
    raw = folder / "d.raw"
    convert(img, raw, dst_format="raw")
    seen["raw"] = hashlib.sha256(raw.read_bytes()).hexdigest()
    back = folder / "back.vhdx"
    convert(raw, back, src_format="raw", dst_format="vhdx")
    with vhdx.open(back) as disk:
        buf = bytearray(disk.size)
        assert disk.readinto(buf) == disk.size  # 8 MiB: a read large enough to be split
        seen["back"] = hashlib.sha256(buf).hexdigest()
    return seen


def test_operations_agree_with_the_fallback(tmp_path, seeking_io, data_file):
    data = data_file[1][: 2 * MiB + 333]
    (tmp_path / "fallback").mkdir()
    with_fallback = _round_trip(tmp_path / "fallback", data)
    assert fileio.pread_into is fileio._seeking_pread_into  # the fallback really ran
    assert len(set(with_fallback.values())) == 1
    expected = bytearray(8 * MiB)
    expected[MiB + 512 : MiB + 512 + len(data)] = data
    expected[6 * MiB : 6 * MiB + MiB // 2] = data[: MiB // 2]
    assert with_fallback["read"] == hashlib.sha256(expected).hexdigest()


def test_operations_agree_without_the_fallback(tmp_path, data_file):
    """The same steps on pread/pwrite give the same bytes (the oracle for the test above)."""
    data = data_file[1][: 2 * MiB + 333]
    seen = _round_trip(tmp_path, data)
    expected = bytearray(8 * MiB)
    expected[MiB + 512 : MiB + 512 + len(data)] = data
    expected[6 * MiB : 6 * MiB + MiB // 2] = data[: MiB // 2]
    assert set(seen.values()) == {hashlib.sha256(expected).hexdigest()}
