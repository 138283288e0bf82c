"""Large reads split between the caller and helper threads (engine/helpers.py, FileSource), and
the page-aligned buffers large reads go into (engine/buffers.py), and the aligned bounce buffer
used for a caller's buffer that starts inside a cache line where this CPU copies into one slowly.

Oracle: ``os.pread`` of the same file. A split read must return exactly the bytes and the count
a single read would (a prefix, short only at the end of the file), release every view of the
caller's buffer before it returns, pass a helper's error to the caller, and keep working in a
forked child (whose helper threads did not survive the fork).
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vhdx.constants import ALIGNED_BUFFER_MIN, MAX_READ_HELPERS, READ_SPLIT_MIN_PIECE
from vhdx.engine import helpers
from vhdx.engine import source as fileio
from vhdx.engine.source import FileSource

PIECE = READ_SPLIT_MIN_PIECE
FILE_SIZE = 9 * PIECE + 12345  # not a whole number of pages: the last piece of a read can be ragged


@contextmanager
def helper_count(count: int) -> Iterator[None]:
    before = helpers.count()
    helpers.configure(count)
    try:
        yield
    finally:
        helpers.configure(before)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    path = tmp_path_factory.mktemp("split") / "data.bin"
    data = os.urandom(FILE_SIZE)
    path.write_bytes(data)
    return str(path), data


@pytest.fixture(scope="module")
def source(data_file: tuple[str, bytes]) -> Iterator[FileSource]:
    src = FileSource.open(data_file[0], writable=False)
    yield src
    src.close()


@settings(max_examples=80, deadline=None)
@given(count=st.integers(0, MAX_READ_HELPERS), offset=st.integers(0, FILE_SIZE + PIECE),
       length=st.integers(0, 6 * PIECE + 5000), misalign=st.integers(0, 4100))
def test_split_read_equals_one_pread(data_file, source, count, offset, length, misalign):
    with helper_count(count):
        read_and_compare(source, data_file[1], offset, length, misalign)


def read_and_compare(source: FileSource, data: bytes, offset: int, length: int, misalign: int) -> None:
    """Read into a buffer ``misalign`` bytes into a fresh mapping and compare with ``data``."""
    area = mmap.mmap(-1, length + misalign + 1)
    view = memoryview(area)[misalign : misalign + length]
    got = source.readinto(offset, view)
    expected = data[offset : offset + length]
    assert got == len(expected)
    assert bytes(view[:got]) == expected
    view.release()
    area.close()  # BufferError if a helper or the address probe still held a view of the buffer


def test_every_helper_takes_a_piece(source, data_file):
    """With three helpers a 4-piece read hands three pieces to helper threads (the split is not a no-op)."""
    seen: list[int] = []
    real = helpers.submit

    def spy(fn, *args):
        def traced(*a):
            seen.append(threading.get_ident())
            return fn(*a)
        return real(traced, *args)

    with helper_count(3):
        helpers.submit = spy  # the module attribute FileSource calls through
        try:
            buf = bytearray(4 * PIECE)
            assert source.readinto(0, memoryview(buf)) == 4 * PIECE
        finally:
            helpers.submit = real
    assert len(seen) == 3 and threading.get_ident() not in seen  # a helper may take two pieces
    assert bytes(buf) == data_file[1][: 4 * PIECE]


def test_no_split_below_two_pieces(source):
    calls: list[object] = []
    real = helpers.submit
    helpers.submit = lambda fn, *a: calls.append(a) or real(fn, *a)
    try:
        with helper_count(3):
            source.readinto(0, memoryview(bytearray(2 * PIECE - 1)))
        assert calls == []
        with helper_count(0):
            source.readinto(0, memoryview(bytearray(8 * PIECE)))
        assert calls == []
    finally:
        helpers.submit = real


def test_buffer_resizable_after_split_read(source):
    buf = bytearray(4 * PIECE)
    with helper_count(2):
        source.readinto(0, memoryview(buf))
    buf.extend(b"x")  # BufferError if any view of buf outlived the read
    assert len(buf) == 4 * PIECE + 1


def test_helper_error_reaches_caller(data_file):
    src = FileSource.open(data_file[0], writable=False)
    os.close(src.fd)  # behind the source's back: every piece now fails with EBADF
    try:
        with helper_count(2), pytest.raises(OSError):
            src.readinto(0, memoryview(bytearray(4 * PIECE)))
    finally:
        src.fd = -1  # already closed


def test_helpers_error_after_callers_piece(data_file, source):
    """A helper failing while the caller's own piece succeeds still fails the read."""
    real = helpers.submit

    def failing(fn, *args):
        def boom(*a):
            raise OSError(5, "injected")
        return real(boom, *args)

    helpers.submit = failing
    try:
        with helper_count(1), pytest.raises(OSError, match="injected"):
            source.readinto(0, memoryview(bytearray(2 * PIECE)))
    finally:
        helpers.submit = real


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_split_reads_work_in_a_forked_child(source, data_file):
    with helper_count(1):
        source.readinto(0, memoryview(bytearray(2 * PIECE)))  # helpers started in this process
        pid = os.fork()
        if pid == 0:  # the child: its helper threads are gone and must be started again
            try:
                buf = bytearray(2 * PIECE)
                ok = source.readinto(PIECE, memoryview(buf)) == 2 * PIECE and bytes(buf) == data_file[1][PIECE : 3 * PIECE]
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_configure_refuses_a_negative_count():
    with pytest.raises(ValueError):
        helpers.configure(-1)
    with helper_count(MAX_READ_HELPERS + 5):
        assert helpers.count() == MAX_READ_HELPERS


def test_wait_survives_keyboard_interrupt():
    """A caller interrupted while waiting still waits for the helper, then re-raises."""
    gate = threading.Event()
    done = threading.Event()

    def slow():
        gate.wait(5)
        done.set()
        return 7

    with helper_count(1):
        task = helpers.submit(slow)
        real = task._done
        calls = {"n": 0}

        class Interrupting:
            def acquire(self):
                calls["n"] += 1
                if calls["n"] == 1:
                    gate.set()  # the helper may finish only after the interrupt
                    raise KeyboardInterrupt
                return real.acquire()

            def release(self):
                real.release()

        task._done = Interrupting()
        with pytest.raises(KeyboardInterrupt):
            task.wait()
        assert done.is_set() and calls["n"] == 2


@pytest.mark.parametrize("size", [1, 4095, 4096, 8 * PIECE + 3])
def test_io_buffer_is_page_aligned_and_zeroed(size):
    import ctypes

    from vhdx.engine.buffers import io_buffer

    buf = io_buffer(size)
    assert len(buf) == size and not buf.readonly
    assert ctypes.addressof(ctypes.c_char.from_buffer(buf)) % mmap.PAGESIZE == 0
    assert buf.tobytes() == bytes(size)
    assert len(io_buffer(0)) == 0
    with pytest.raises(ValueError):
        io_buffer(-1)


def test_reads_not_split_is_per_thread(source):
    calls: list[str] = []
    real = helpers.submit

    def spy(fn, *args):
        calls.append(threading.current_thread().name)
        return real(fn, *args)

    helpers.submit = spy
    try:
        with helper_count(1):
            with helpers.reads_not_split():
                source.readinto(0, memoryview(bytearray(4 * PIECE)))
                assert calls == [] and helpers.count() == 0
                other = threading.Thread(target=source.readinto, args=(0, memoryview(bytearray(4 * PIECE))),
                                         name="other")
                other.start()
                other.join()
                assert calls == ["other"]  # only this thread opted out
            source.readinto(0, memoryview(bytearray(4 * PIECE)))
            assert len(calls) == 2 and helpers.count() == 1
    finally:
        helpers.submit = real


# --- caller buffers inside a cache line: the bounce path (engine/source.py) -----------------------
@contextmanager
def alignment_verdict(slow: bool, bounce_size: int | None = None) -> Iterator[None]:
    """Pretend this machine's copy into misaligned memory is slow (or not); optionally shrink
    the bounce buffer so that one read needs several rounds."""
    from unittest import mock

    patches = [mock.patch.dict(fileio._ALIGNMENT_SLOW, {i: slow for i in range(64)})]
    if bounce_size is not None:
        patches.append(mock.patch.object(fileio, "ALIGNMENT_BOUNCE_SIZE", bounce_size))
    fileio._BOUNCE.__dict__.pop("buffer", None)
    for p in patches:
        p.start()
    try:
        yield
    finally:
        for p in reversed(patches):
            p.stop()
        fileio._BOUNCE.__dict__.pop("buffer", None)


@settings(max_examples=60, deadline=None)
@given(count=st.integers(0, 2), offset=st.integers(0, FILE_SIZE + PIECE),
       length=st.integers(ALIGNED_BUFFER_MIN, 5 * PIECE), misalign=st.integers(1, 63),
       small_bounce=st.booleans())
def test_bounced_read_equals_one_pread(data_file, source, count, offset, length, misalign, small_bounce):
    with helper_count(count), alignment_verdict(True, ALIGNED_BUFFER_MIN if small_bounce else None):
        read_and_compare(source, data_file[1], offset, length, misalign)


@pytest.mark.parametrize(("slow", "misalign", "bounced"), [(True, 16, True), (True, 0, False), (False, 16, False)])
def test_bounce_only_for_a_slow_misaligned_buffer(source, monkeypatch, slow, misalign, bounced):
    calls: list[int] = []
    real = fileio._readinto_bounced
    monkeypatch.setattr(fileio, "_readinto_bounced", lambda fd, off, buf: calls.append(len(buf)) or real(fd, off, buf))
    area = mmap.mmap(-1, 2 * PIECE + 64)
    view = memoryview(area)[misalign : misalign + 2 * PIECE]
    with alignment_verdict(slow):
        assert source.readinto(0, view) == 2 * PIECE
    assert calls == ([2 * PIECE] if bounced else [])
    view.release()
    area.close()


def test_small_and_bytearray_reads(source, data_file):
    """Below ALIGNED_BUFFER_MIN nothing is probed; a bytearray (a common caller buffer) reads right."""
    with alignment_verdict(True):
        buf = bytearray(ALIGNED_BUFFER_MIN - 1)
        assert source.readinto(5, memoryview(buf)) == len(buf)
        assert bytes(buf) == data_file[1][5 : 5 + len(buf)]
        big = bytearray(3 * PIECE)
        assert source.readinto(7, memoryview(big)) == len(big)
        assert bytes(big) == data_file[1][7 : 7 + len(big)]
        big.extend(b"x")  # no view of it outlived the read


def test_alignment_probe_measures_once_per_offset(monkeypatch):
    measured: list[int] = []
    monkeypatch.setattr(fileio, "_ALIGNMENT_SLOW", {})
    monkeypatch.setattr(fileio, "_measure_alignment_penalty", lambda m: measured.append(m) or 3.0)
    assert fileio._alignment_is_slow(16) is True
    assert fileio._alignment_is_slow(16) is True
    assert measured == [16]


def test_alignment_probe_runs_here():
    """The real probe returns a ratio (its value depends on the CPU and is not checked)."""
    ratio = fileio._measure_alignment_penalty(16)
    assert ratio > 0


def test_alignment_probe_failure_means_read_directly(monkeypatch):
    """A probe that cannot run (no room for its memfd) says "not slow" instead of failing the read."""
    def no_room(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio, "pwrite_all", no_room)
    assert fileio._measure_alignment_penalty(16) == 1.0
