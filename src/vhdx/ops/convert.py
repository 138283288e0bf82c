"""convert(): copy a virtual disk into a new image of another format, type or geometry.

raw <-> VHDX, dynamic <-> fixed, block-size and sector-size changes, and a differencing chain
flattened into one standalone image (reading the top of a chain gives the merged view). The
content of the result reads byte-identical to the source; only its container changes.

How the copy goes:

* Only what may hold data is read: the ``data`` extents of a VHDX source (ZERO, UNMAPPED and
  unallocated ranges are skipped without a read), the data segments of a sparse raw file
  (``SEEK_DATA``/``SEEK_HOLE``). Neighbouring extents are read together, in windows of at most
  ``COPY_CHUNK`` bytes that never cross a ``COPY_CHUNK`` boundary, into one reused buffer.
* A helper thread reads (and checks for zeros) ahead of the writes, so reading and writing
  overlap (``COPY_BUFFERS`` windows in flight).
* What was read is checked for zeros per ``ZERO_GRANULE`` (numpy; the first word of each granule
  answers for random data, so only granules that start with zeros are scanned): all-zero runs are
  not written. A dynamic output therefore allocates no block that reads all zero, and a raw or
  fixed output leaves holes (sparse file) where the data is zero.
* A new file is built under a temporary name in the destination folder and moved into place only
  when complete and flushed: a crash or an error never leaves a partial destination, and an
  existing file is replaced only with ``overwrite=True`` (the final link fails if the name
  appeared meanwhile).

Streams (``"-"`` or a file object) carry raw bytes only: a raw source stream is read once,
sequentially; a raw destination stream gets every byte, zeros included (a pipe cannot be sparse).
A raw stream converted to VHDX needs the virtual size up front: with ``size=`` the stream is
copied straight into the new image (a stream longer than ``size`` is an error, a shorter one reads
as zeros to the end); without it, the stream is first spooled into a sparse temporary file in the
destination folder (zeros are not stored) and converted from there once its length is known.

References: MS-VHDX 2.5 (what reads as zero); VHDX-FORMAT.md 8.3, 11.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import queue
import stat
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import numpy as np

from .._units import align_up
from ..constants import DEFAULT_LOGICAL_SECTOR_SIZE, KiB, MiB
from .. import newfile
from ..create import create
from ..disk import VirtualDisk
from ..disk import open as open_disk
from ..engine import helpers
from ..engine import source as fileio
from ..engine.buffers import io_buffer
from .progress import ProgressCallback, ProgressReporter
from .result import OperationResult

# Large enough that per-call overhead vanishes next to the copy, small enough to stay in cache;
# a multiple of every sector size and ZERO_GRANULE, and of block sizes up to itself.
COPY_CHUNK = 8 * MiB
# Buffers in flight between the reading thread and the writing one.
COPY_BUFFERS = 3
# Seconds to wait for the reading thread to stop after a failure.
READER_EXIT_WAIT = 5.0
# Zero detection granularity: the usual file system block, so a raw output's holes line up.
ZERO_GRANULE = 4 * KiB
# In a dynamic output a zero run inside a block that has data saves no allocation, only a write
# call; shorter runs than this are written with their neighbours.
MIN_HOLE_DYNAMIC = 64 * KiB
# Extents closer than this are read in one call (the gap reads as zeros and is not written).
COALESCE_GAP = 256 * KiB

FORMATS = ("vhdx", "raw")
DISK_TYPES = ("dynamic", "fixed")
VHDX_SUFFIXES = (".vhdx", ".avhdx")
STREAM = "-"
OPERATION = "convert"

PathOrStream = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True)
class ConvertResult(OperationResult):
    """What ``convert`` did.

    Attributes:
        source, destination: as given (``"-"`` for a stream).
        source_format, destination_format: ``"vhdx"`` or ``"raw"``.
        disk_type: the destination's VHDX type (None for raw output).
        virtual_size: bytes of the destination's virtual disk (raw: its length).
        block_size, logical_sector_size, physical_sector_size: the destination's geometry (None
            for raw output).
        source_layers: files read (more than 1 when a differencing chain was flattened).
        bytes_read: payload bytes read from the source (holes and zero extents are not read).
        bytes_written: payload bytes written to the destination (all-zero runs are not written,
            except to a stream).
        blocks_allocated: payload blocks allocated in a VHDX destination (0 for raw).
        file_size_before: bytes the source file(s) span (the whole chain; None for a stream).
        file_size_after: length of the destination file (None for a stream).
        actual_size_after: bytes the destination occupies on its file system (sparse files
            occupy less than their length; None when unknown or for a stream).
        seconds: wall time.
    """

    source: str
    destination: str
    source_format: str
    destination_format: str
    disk_type: str | None
    virtual_size: int
    block_size: int | None
    logical_sector_size: int | None
    physical_sector_size: int | None
    source_layers: int
    bytes_read: int
    bytes_written: int
    blocks_allocated: int
    file_size_before: int | None
    file_size_after: int | None
    actual_size_after: int | None
    seconds: float


def infer_format(path: object) -> str:
    """``"vhdx"`` for a path ending in ``.vhdx`` or ``.avhdx`` (any case) and for an open
    ``VirtualDisk``, else ``"raw"`` (also for ``"-"`` and file objects: streams carry raw bytes)."""
    if isinstance(path, VirtualDisk):
        return "vhdx"
    if isinstance(path, (str, os.PathLike)) and not _is_stream(path):
        return "vhdx" if os.fspath(path).lower().endswith(VHDX_SUFFIXES) else "raw"
    return "raw"


def convert(
    src: PathOrStream,
    dst: PathOrStream,
    *,
    src_format: str | None = None,
    dst_format: str | None = None,
    disk_type: str | None = None,
    block_size: int | None = None,
    logical_sector_size: int | None = None,
    physical_sector_size: int | None = None,
    size: int | None = None,
    preallocate: bool = False,
    progress: ProgressCallback | None = None,
    overwrite: bool = False,
    parent_search: Sequence[str | os.PathLike[str]] = (),
    parent: str | os.PathLike[str] | None = None,
    ignore_id_mismatch: bool = False,
) -> ConvertResult:
    """Write the virtual disk of ``src`` into a new image ``dst``.

    Args:
        src: a VHDX image (a differencing one is flattened with its chain) as a path or an open
            ``VirtualDisk`` (left open), a raw image file or block device, or ``"-"``/a binary
            file object to read raw bytes from (sequentially).
        dst: the new file, or ``"-"``/a binary file object to write raw bytes to.
        src_format, dst_format: ``"vhdx"`` or ``"raw"``; by default inferred from the name
            (``.vhdx``/``.avhdx`` are VHDX, anything else raw; streams are raw).
        disk_type: ``"dynamic"`` (the default) or ``"fixed"``; VHDX output only.
        block_size: of the new VHDX; by default the source's (a chain's base image's), else
            Hyper-V's default.
        logical_sector_size, physical_sector_size: 512 or 4096; by default the source's, else
            512 and 4096.
        size: virtual size of the output. By default the source's; a raw source converted to
            VHDX is padded with zeros to a whole logical sector. Needed to stream a raw input
            straight into a VHDX (see the module docstring); may not be smaller than the source.
        preallocate: fixed VHDX output only: allocate its payload on the file system.
        progress: called as the copy advances (``Progress.done`` counts virtual bytes passed,
            out of ``total`` = the virtual size; None while a stream of unknown length is read).
        overwrite: replace ``dst`` if it exists (never done otherwise).
        parent_search, parent, ignore_id_mismatch: how to find the parents of a differencing
            source (as for ``vhdx.open``).

    Returns:
        A ``ConvertResult``.

    Raises:
        ValueError: an invalid combination of arguments (the message says which and why).
        FileExistsError: ``dst`` exists and ``overwrite`` is False.
        VhdxError: the source VHDX (or its chain) cannot be read.
        OSError: from the operating system; no destination file is left behind.
    """
    started = time.perf_counter()
    src_format = src_format or infer_format(src)
    dst_format = dst_format or infer_format(dst)
    for label, fmt in (("source", src_format), ("destination", dst_format)):
        if fmt not in FORMATS:
            raise ValueError(f"{label} format must be 'vhdx' or 'raw', not {fmt!r}")
    src_stream, dst_stream = _is_stream(src), _is_stream(dst)
    if src_stream and src_format == "vhdx":
        raise ValueError("a VHDX source needs random access: only raw bytes can be read from a stream")
    if dst_stream and dst_format == "vhdx":
        raise ValueError("a VHDX image needs random access: only raw bytes can be written to a stream")
    if dst_format == "raw":
        given = [name for name, value in (("disk_type", disk_type), ("block_size", block_size),
                                          ("logical_sector_size", logical_sector_size),
                                          ("physical_sector_size", physical_sector_size)) if value is not None]
        if preallocate:
            given.append("preallocate")
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise ValueError(f"{', '.join(given)} {verb} to VHDX output only, not raw")
    disk_type = disk_type or "dynamic"
    if disk_type not in DISK_TYPES:
        raise ValueError(f"disk type must be 'dynamic' or 'fixed', not {disk_type!r}")
    if preallocate and disk_type != "fixed":
        raise ValueError("preallocate applies to fixed disks only")
    if size is not None and size <= 0:
        raise ValueError(f"size must be positive, not {size}")
    if not dst_stream:
        _check_destination(dst, overwrite)  # type: ignore[arg-type]

    reporter = ProgressReporter(progress, OPERATION, None)
    spool: str | None = None
    with contextlib.ExitStack() as cleanup:
        source = _open_source(src, src_format, parent_search, parent, ignore_id_mismatch)
        cleanup.callback(source.close)
        if source.size is None and dst_format == "vhdx" and size is None:
            # The virtual size must be known before the image exists: spool the stream first.
            spool, spool_size = _spool(source, dst, reporter)  # type: ignore[arg-type]
            cleanup.callback(newfile.discard, spool)
            source = _RawFileSource(spool)
            cleanup.callback(source.close)
            source.size = spool_size
        out_size = _output_size(source, size, dst_format, logical_sector_size)  # None: a stream's length
        reporter.total = out_size
        sink = _make_sink(dst, dst_format, out_size, source, overwrite=overwrite, disk_type=disk_type,
                          block_size=block_size, logical_sector_size=logical_sector_size,
                          physical_sector_size=physical_sector_size, preallocate=preallocate)
        try:
            reporter.start()
            bytes_read = _copy(source, sink, out_size, reporter)
            if out_size is None:
                out_size = bytes_read
            blocks = sink.finish(out_size)
        except BaseException:
            sink.abort()
            raise
        reporter.finish(out_size)
        file_size_before = source.file_size
        layers = source.layers
    after: os.stat_result | None = None
    if not dst_stream:
        after = os.stat(dst)  # type: ignore[arg-type]
    return ConvertResult(
        source=_label(src),
        destination=_label(dst),
        source_format=src_format,
        destination_format=dst_format,
        disk_type=disk_type if dst_format == "vhdx" else None,
        virtual_size=out_size,
        block_size=sink.geometry[0],
        logical_sector_size=sink.geometry[1],
        physical_sector_size=sink.geometry[2],
        source_layers=layers,
        bytes_read=bytes_read,
        bytes_written=sink.bytes_written,
        blocks_allocated=blocks,
        file_size_before=None if spool is not None else file_size_before,
        file_size_after=after.st_size if after is not None else None,
        actual_size_after=(getattr(after, "st_blocks", 0) * 512 or None) if after is not None else None,
        seconds=time.perf_counter() - started,
    )


# --- the copy ---------------------------------------------------------------------------------------
def _copy(source: _Source, sink: _Sink, out_size: int | None, reporter: ProgressReporter) -> int:
    """Copy every window of ``source`` that may hold data (up to ``out_size``, or to the end of a
    stream when None); return the bytes read.

    Reading (and the zero check) runs in a helper thread, ahead of the writes in this one, through
    ``COPY_BUFFERS`` reused buffers: the system calls and numpy release the GIL, so the two sides
    overlap and the copy costs about the slower of them rather than their sum. (Mapping a raw
    source instead of reading it saved no CPU in measurements: populating and unmapping the
    windows cost what the copy did.) Only this thread touches ``sink``; only the helper touches
    ``source``.
    """
    limit = sys.maxsize if out_size is None else out_size
    sparse, min_hole = sink.sparse, sink.min_hole
    free: queue.Queue[memoryview | None] = queue.Queue()
    ready: queue.Queue[_Filled | BaseException | None] = queue.Queue()
    for _ in range(COPY_BUFFERS):
        free.put(io_buffer(COPY_CHUNK))
    stop = threading.Event()

    def produce() -> None:
        try:
            # This thread and the writing one already keep two CPUs busy: splitting each read
            # across another thread only adds handoffs (engine/helpers.py).
            with helpers.reads_not_split():
                _produce()
        except BaseException as err:  # handed to the writing thread, which raises it
            ready.put(err)
            return
        ready.put(None)

    def _produce() -> None:
        for start, end in source.windows(limit):
            buffer = free.get()
            if buffer is None or stop.is_set():
                return
            n = end - start
            got = source.read(start, buffer[:n])
            runs = nonzero_runs(buffer, got, ZERO_GRANULE, min_hole) if sparse else [(0, got)] if got else []
            ready.put(_Filled(start, got, buffer, runs))
            if got < n:  # the end of a stream
                break

    reader = threading.Thread(target=produce, name="vhdx-convert-reader", daemon=True)
    reader.start()
    bytes_read = 0
    done = False
    try:
        while True:
            item = ready.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            for a, b in item.runs:
                sink.write(item.start + a, item.view[a:b])
            bytes_read += item.length
            free.put(item.view)
            reporter.update(item.start + item.length)
        done = True
    finally:
        stop.set()
        free.put(None)  # wakes the reader if it waits for a buffer
        # After a failure the reader may be blocked on a pipe that never delivers; it is a
        # daemon thread and stops at its next buffer request, so do not wait for it forever.
        reader.join(None if done else READER_EXIT_WAIT)
    return bytes_read


@dataclass(frozen=True, slots=True)
class _Filled:
    """A window read into ``view[:length]``, with its non-zero runs (relative to ``start``)."""

    start: int
    length: int
    view: memoryview
    runs: list[tuple[int, int]]


def windows(ranges: Iterable[tuple[int, int]], chunk: int = COPY_CHUNK,
            max_gap: int = COALESCE_GAP) -> Iterator[tuple[int, int]]:
    """Turn sorted ``[start, end)`` ranges into read windows: ranges less than ``max_gap`` apart
    are joined, and a window never crosses a multiple of ``chunk`` (so it fits the buffer and
    the writes line up with blocks)."""
    cur: list[int] | None = None
    for a, b in ranges:
        if a >= b:
            continue
        if cur is not None and a - cur[1] < max_gap:
            cur[1] = max(cur[1], b)
            continue
        if cur is not None:
            yield from _split(cur[0], cur[1], chunk)
        cur = [a, b]
    if cur is not None:
        yield from _split(cur[0], cur[1], chunk)


def _split(a: int, b: int, chunk: int) -> Iterator[tuple[int, int]]:
    pos = a
    while pos < b:
        nxt = min(b, (pos // chunk + 1) * chunk)
        yield pos, nxt
        pos = nxt


def nonzero_runs(buf: memoryview | bytearray | bytes, length: int, granule: int = ZERO_GRANULE,
                 min_hole: int = ZERO_GRANULE) -> list[tuple[int, int]]:
    """The ``[start, end)`` runs of ``buf[:length]`` that hold a non-zero byte, in whole
    ``granule``s (the last one clipped to ``length``); zero runs shorter than ``min_hole`` between
    two runs are absorbed into them. ``buf`` is only read (it may be a read-only mapping).
    """
    if length <= 0:
        return []
    view = memoryview(buf)
    rows, tail = divmod(length, granule)
    flags = np.empty(rows + (1 if tail else 0), dtype=bool)
    if rows:
        words = np.frombuffer(view, dtype=np.uint64, count=rows * granule // 8).reshape(rows, granule // 8)
        nonzero = words[:, 0] != 0  # random data: the first word settles nearly every granule
        doubtful = np.flatnonzero(~nonzero)
        if doubtful.size == rows:
            nonzero = words.max(axis=1) != 0
        elif doubtful.size:
            nonzero[doubtful] = words[doubtful].max(axis=1) != 0
        flags[:rows] = nonzero
    if tail:
        flags[rows] = bool(np.frombuffer(view[rows * granule : length], dtype=np.uint8).any())
    if not flags.any():
        return []
    if flags.all():
        return [(0, length)]
    edges = np.diff(flags.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    if min_hole > granule and len(starts) > 1:
        keep = (starts[1:] - ends[:-1]) * granule >= min_hole
        starts = np.concatenate((starts[:1], starts[1:][keep]))
        ends = np.concatenate((ends[:-1][keep], ends[-1:]))
    return [(s * granule, min(e * granule, length)) for s, e in zip(starts.tolist(), ends.tolist())]


# --- sources -------------------------------------------------------------------------------------------
class _Source(Protocol):
    size: int | None  # None: a stream of unknown length
    file_size: int | None
    layers: int
    block_size: int | None
    logical_sector_size: int | None
    physical_sector_size: int | None

    def windows(self, out_size: int) -> Iterator[tuple[int, int]]: ...

    def read(self, offset: int, view: memoryview) -> int: ...

    def close(self) -> None: ...


def _open_source(src: PathOrStream, src_format: str, parent_search: Sequence[str | os.PathLike[str]],
                 parent: str | os.PathLike[str] | None, ignore_id_mismatch: bool) -> _Source:
    if src_format == "vhdx":
        return _VhdxSource(src, parent_search, parent, ignore_id_mismatch)
    return _raw_source(src)


class _VhdxSource:
    """A VHDX image (and its chain), read through the public API; its extents drive the copy."""

    def __init__(self, src: str | os.PathLike[str] | BinaryIO | VirtualDisk,
                 parent_search: Sequence[str | os.PathLike[str]], parent: str | os.PathLike[str] | None,
                 ignore_id_mismatch: bool) -> None:
        # An open VirtualDisk is the caller's: used as it is, left open, its position restored.
        self._own = not isinstance(src, VirtualDisk)
        if isinstance(src, VirtualDisk):
            self.disk = src
            self._position: int = src.tell()
        else:
            self.disk = open_disk(src, "rb", parent_search=parent_search, parent=parent,
                                  ignore_id_mismatch=ignore_id_mismatch)
        disk = self.disk
        try:
            info = disk.info()
            self.size: int | None = disk.size
            self.file_size: int | None = sum(layer.file_size for layer in (info, *info.chain))
            self.layers = len(disk.chain)
            base = disk.chain[-1]
            # A differencing top's block size (2 MiB by default) is a poor choice for a
            # standalone image; the base image's is what the disk was made with.
            self.block_size: int | None = base.block_size if base.disk_type != "differencing" else disk.block_size
            self.logical_sector_size: int | None = disk.logical_sector_size
            self.physical_sector_size: int | None = disk.physical_sector_size
        except BaseException:
            self.close()
            raise

    def windows(self, out_size: int) -> Iterator[tuple[int, int]]:
        ranges = ((e.virtual_offset, e.end) for e in self.disk.extents() if e.state == "data")
        return windows(ranges)

    def read(self, offset: int, view: memoryview) -> int:
        disk = self.disk
        disk.seek(offset)
        got = disk.readinto(view)
        if got != len(view):  # the range lies inside the disk: cannot happen
            raise OSError(errno.EIO, f"short read at virtual offset {offset}", disk.name)
        return got

    def close(self) -> None:
        if self._own:
            self.disk.close()
        elif not self.disk.closed:
            self.disk.seek(self._position)


class _RawFileSource:
    """A raw image file or block device; a sparse file's holes are skipped (SEEK_HOLE)."""

    layers = 1
    block_size = logical_sector_size = physical_sector_size = None

    def __init__(self, path: str | os.PathLike[str], fd: int | None = None) -> None:
        self.name = os.fspath(path)
        self.fd = _open_read(path) if fd is None else fd
        st = os.fstat(self.fd)
        self.regular = stat.S_ISREG(st.st_mode)
        self.size: int | None = st.st_size if self.regular else os.lseek(self.fd, 0, os.SEEK_END)
        self.file_size: int | None = self.size

    def data_ranges(self) -> Iterator[tuple[int, int]]:
        """The ranges that may hold data: every data segment of a sparse file, else everything."""
        size = self.size or 0
        seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
        if not self.regular or seek_data is None or seek_hole is None:
            yield 0, size
            return
        pos = 0
        while pos < size:
            try:
                start = os.lseek(self.fd, pos, seek_data)
            except OSError as err:
                if err.errno == errno.ENXIO:  # nothing but holes from pos on
                    return
                yield pos, size  # no hole information on this file system
                return
            if start >= size:
                return
            try:
                end = min(size, os.lseek(self.fd, start, seek_hole))
            except OSError:
                end = size
            if end <= start:  # defensive: never loop in place
                end = size
            yield start, end
            pos = end

    def windows(self, out_size: int) -> Iterator[tuple[int, int]]:
        return windows(self.data_ranges())

    def read(self, offset: int, view: memoryview) -> int:
        want = len(view)
        got = fileio.pread_into(self.fd, view, offset) if want else 0
        while got < want:
            n = fileio.pread_into(self.fd, view[got:], offset + got)
            if n <= 0:
                raise OSError(errno.EIO, f"unexpected end of file at offset {offset + got} (did the file shrink "
                              "while it was converted?)", self.name)
            got += n
        return got

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _StreamSource:
    """Raw bytes read once, in order, from a pipe or file object."""

    layers = 1
    block_size = logical_sector_size = physical_sector_size = None
    file_size = None

    def __init__(self, stream: BinaryIO, *, close: bool) -> None:
        self.stream = stream
        self._close = close
        self.size: int | None = None
        self.pos = 0

    def windows(self, out_size: int) -> Iterator[tuple[int, int]]:
        """Consecutive chunk windows up to ``out_size``; ``read`` shortens the last at EOF, and
        one byte more than ``out_size`` in the stream is an error."""
        while self.pos < out_size:
            start = self.pos
            yield start, min(out_size, (start // COPY_CHUNK + 1) * COPY_CHUNK)
            if self.pos == start or self._eof:
                return
        if not self._eof and _read_full(self.stream, memoryview(bytearray(1))):
            raise ValueError(f"the input is longer than the size given ({out_size} bytes)")

    _eof = False

    def read(self, offset: int, view: memoryview) -> int:
        if offset != self.pos:
            raise ValueError(f"a stream is read in order (at {self.pos}, not {offset})")
        got = _read_full(self.stream, view)
        self.pos += got
        if got < len(view):
            self._eof = True
        return got

    def close(self) -> None:
        if self._close:
            self.stream.close()


def _read_full(stream: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``stream`` (pipes return short reads); short only at end of stream."""
    got = 0
    want = len(view)
    readinto = getattr(stream, "readinto", None)
    while got < want:
        if readinto is not None:
            n = readinto(view[got:])
        else:
            data = stream.read(want - got)
            n = len(data)
            view[got : got + n] = data
        if not n:
            break
        got += n
    return got


def _raw_source(src: PathOrStream) -> _RawFileSource | _StreamSource:
    if isinstance(src, str) and src == STREAM:
        return _StreamSource(sys.stdin.buffer, close=False)
    if not isinstance(src, (str, os.PathLike)):
        return _StreamSource(src, close=False)
    fd = _open_read(src)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(src))
        if stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode):
            return _RawFileSource(src, fd)
    except BaseException:
        os.close(fd)
        raise
    # A FIFO, character device or socket (``<(cmd)``): read it as a stream.
    return _StreamSource(io.FileIO(fd, "rb", closefd=True), close=True)


def _spool(source: _Source, dst: str | os.PathLike[str], reporter: ProgressReporter) -> tuple[str, int]:
    """Copy a stream of unknown length into a sparse temporary file next to ``dst``; return its
    path and the stream's length."""
    sink = _RawFileSink(dst, overwrite=True, keep_temp=True)
    try:
        reporter.start()
        length = _copy(source, sink, None, reporter)
        sink.finish(length)
    except BaseException:
        sink.abort()
        raise
    return sink.tmp, length


def _output_size(source: _Source, size: int | None, dst_format: str, logical_sector_size: int | None) -> int | None:
    if size is not None:
        if source.size is not None and size < source.size:
            raise ValueError(f"size {size} is smaller than the source ({source.size} bytes): data would be lost")
        return size
    if source.size is None:  # a stream to a raw stream or file: its length is found by reading it
        return None
    if dst_format == "vhdx":
        sector = logical_sector_size or source.logical_sector_size or DEFAULT_LOGICAL_SECTOR_SIZE
        return align_up(source.size, sector)  # a VHDX holds whole sectors; the padding reads zero
    return source.size


# --- sinks ---------------------------------------------------------------------------------------------
class _Sink(Protocol):
    sparse: bool  # zero runs may be skipped (they read as zero in the new file)
    min_hole: int
    bytes_written: int
    geometry: tuple[int | None, int | None, int | None]

    def write(self, offset: int, view: memoryview) -> None: ...

    def finish(self, size: int) -> int: ...

    def abort(self) -> None: ...


class _RawFileSink:
    """A new raw file under a temporary name, written sparse and truncated to size at the end."""

    sparse = True
    min_hole = ZERO_GRANULE
    geometry: tuple[int | None, int | None, int | None] = (None, None, None)

    def __init__(self, dst: str | os.PathLike[str], *, overwrite: bool, keep_temp: bool = False) -> None:
        self.dst = os.fspath(dst)
        self.overwrite = overwrite
        self.keep_temp = keep_temp  # a spool: finish leaves the file under its temporary name
        self.fd, self.tmp = newfile.make_temp(self.dst, ".spool" if keep_temp else ".tmp")
        self.bytes_written = 0

    def write(self, offset: int, view: memoryview) -> None:
        fileio.pwrite_all(self.fd, view, offset)
        self.bytes_written += len(view)

    def finish(self, size: int) -> int:
        os.ftruncate(self.fd, size)
        if not self.keep_temp:
            os.fsync(self.fd)  # publish() sets the mode (os.fchmod is POSIX-only before Python 3.13)
        os.close(self.fd)
        self.fd = -1
        if not self.keep_temp:
            newfile.publish(self.tmp, self.dst, overwrite=self.overwrite)
        return 0

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        newfile.discard(self.tmp)


class _StreamSink:
    """Raw bytes written in order to a pipe or file object, zeros included."""

    sparse = False
    min_hole = ZERO_GRANULE
    geometry: tuple[int | None, int | None, int | None] = (None, None, None)
    _ZEROS = memoryview(bytes(COPY_CHUNK))

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.pos = 0
        self.bytes_written = 0

    def write(self, offset: int, view: memoryview) -> None:
        self._pad(offset)
        self.stream.write(view)
        self.pos += len(view)
        self.bytes_written += len(view)

    def _pad(self, offset: int) -> None:
        while self.pos < offset:
            n = min(offset - self.pos, len(self._ZEROS))
            self.stream.write(self._ZEROS[:n])
            self.pos += n
            self.bytes_written += n

    def finish(self, size: int) -> int:
        self._pad(size)
        self.stream.flush()
        return 0

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.flush()


class _VhdxSink:
    """A new VHDX under a temporary name, written through the public API."""

    sparse = True

    def __init__(self, dst: str | os.PathLike[str], size: int, *, overwrite: bool, disk_type: str,
                 block_size: int | None, logical_sector_size: int | None, physical_sector_size: int | None,
                 preallocate: bool) -> None:
        self.dst = os.fspath(dst)
        self.overwrite = overwrite
        fd, self.tmp = newfile.make_temp(self.dst, ".tmp")
        os.close(fd)  # create() builds the image in its own temporary file and moves it over this one
        self.disk: VirtualDisk | None = None
        try:
            kwargs: dict[str, Any] = {}
            if logical_sector_size is not None:
                kwargs["logical_sector_size"] = logical_sector_size
            if physical_sector_size is not None:
                kwargs["physical_sector_size"] = physical_sector_size
            self.disk = create(self.tmp, size, disk_type=disk_type, block_size=block_size, overwrite=True,
                               preallocate=preallocate, **kwargs)
        except BaseException:
            newfile.discard(self.tmp)
            raise
        disk = self.disk
        self.geometry = (disk.block_size, disk.logical_sector_size, disk.physical_sector_size)
        # Inside a block that already has data a zero run saves nothing but a call; a fixed
        # image's file is sparse, so there every zero page left unwritten stays a hole.
        self.min_hole = ZERO_GRANULE if disk_type == "fixed" else MIN_HOLE_DYNAMIC
        self._pwrite = disk.pwrite
        self.bytes_written = 0

    def write(self, offset: int, view: memoryview) -> None:
        self._pwrite(offset, view)
        self.bytes_written += len(view)

    def finish(self, size: int) -> int:
        disk = self.disk
        assert disk is not None
        blocks = disk.info().allocated_blocks
        disk.close()  # flushes: payload synced, metadata committed through the log
        self.disk = None
        newfile.publish(self.tmp, self.dst, overwrite=self.overwrite)
        return blocks

    def abort(self) -> None:
        if self.disk is not None:
            with contextlib.suppress(Exception):
                self.disk.close()
            self.disk = None
        newfile.discard(self.tmp)


def _make_sink(dst: PathOrStream, dst_format: str, size: int | None, source: _Source, *, overwrite: bool,
               disk_type: str, block_size: int | None, logical_sector_size: int | None,
               physical_sector_size: int | None, preallocate: bool) -> _Sink:
    if _is_stream(dst):
        return _StreamSink(sys.stdout.buffer if isinstance(dst, str) else dst)  # type: ignore[arg-type]
    path: str | os.PathLike[str] = dst  # type: ignore[assignment]
    if dst_format == "raw":
        return _RawFileSink(path, overwrite=overwrite)
    assert size is not None  # a stream source was spooled, or size given
    return _VhdxSink(
        path, size, overwrite=overwrite, disk_type=disk_type,
        block_size=block_size if block_size is not None else source.block_size,
        logical_sector_size=logical_sector_size if logical_sector_size is not None else source.logical_sector_size,
        physical_sector_size=physical_sector_size if physical_sector_size is not None else source.physical_sector_size,
        preallocate=preallocate)


# --- files ---------------------------------------------------------------------------------------------
def _open_read(path: str | os.PathLike[str]) -> int:
    return os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))


def _is_stream(obj: object) -> bool:
    if isinstance(obj, VirtualDisk):
        return False
    return (isinstance(obj, str) and obj == STREAM) or not isinstance(obj, (str, os.PathLike))


def _label(obj: object) -> str:
    if isinstance(obj, VirtualDisk):
        return str(obj.name)
    return os.fspath(obj) if isinstance(obj, (str, os.PathLike)) else STREAM  # type: ignore[arg-type]


def _check_destination(dst: str | os.PathLike[str], overwrite: bool) -> None:
    """Fail before any work when the destination cannot be (re)placed."""
    path = os.fspath(dst)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    if os.path.lexists(path):
        mode = os.stat(path).st_mode if os.path.exists(path) else os.lstat(path).st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISLNK(mode):
            # A device or FIFO cannot be replaced by renaming; stream into it instead ("-").
            raise ValueError(f"{path}: not a regular file; write raw output to it as a stream ('-') instead")
        if not overwrite:
            raise FileExistsError(errno.EEXIST, "file exists (pass overwrite=True to replace it)", path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), folder)


__all__ = ["ConvertResult", "convert", "infer_format", "nonzero_runs", "windows"]
