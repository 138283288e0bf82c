"""Random-access byte sources: the only module below the public API that performs I/O.

``FileSource`` reads through a file descriptor with ``os.preadv`` straight into the caller's
buffer (a large read in pieces at once, with engine/helpers.py's threads); ``FileObjectSource``
adapts any seekable binary file object; ``OverlaySource`` lays the writes of an unreplayed log
over another source, in memory, so that a read-only open never writes the file (VHDX-FORMAT.md
10.5). ``RemoteSource`` reads a file named by an fsspec URL (``s3://``, ``http(s)://``,
``memory://``, ...) by byte ranges through a bounded block cache, read-only.
"""

from __future__ import annotations

import bisect
import ctypes
import errno
import heapq
import io
import mmap
import os
import re
import stat
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol, runtime_checkable

from ..constants import (
    ALIGNED_BUFFER_MIN,
    ALIGNMENT_BOUNCE_SIZE,
    ALIGNMENT_PENALTY,
    ALIGNMENT_PROBE_ROUNDS,
    ALIGNMENT_PROBE_SIZE,
    READ_SPLIT_MIN_PIECE,
    REMOTE_CACHE_BLOCK_SIZE,
    REMOTE_CACHE_BLOCKS,
    REMOTE_MAX_REQUEST,
)
from ..errors import ReadOnlyError, TruncatedError, UnsupportedError
from . import helpers


@runtime_checkable
class RandomAccess(Protocol):
    """What the engine needs from the bytes of a file."""

    name: str

    def size(self) -> int: ...

    def readinto(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset``; return the count read (short only at end of file)."""

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None: ...

    def truncate(self, size: int) -> None: ...

    def sync(self) -> None: ...

    def close(self) -> None: ...


def read_exact(source: RandomAccess, offset: int, length: int, structure: str) -> bytes:
    """Read exactly ``length`` bytes at ``offset`` or raise TruncatedError naming ``structure``."""
    buf = bytearray(length)
    got = source.readinto(offset, memoryview(buf))
    if got != length:
        raise TruncatedError(f"file ends at 0x{offset + got:x}, inside the {structure} (0x{offset:x}-0x{offset + length:x})",
                             image=source.name, structure=structure, offset=offset)
    return bytes(buf)


# --- positional I/O on a descriptor ------------------------------------------------------------
# pread/pwrite leave the file position alone, so any number of threads can share a descriptor.
# Windows has none of them (nor preadv): there one lock serialises seek + read/write, which is
# correct but gains nothing from threads, so large reads are not split either. Everything in the
# package that reads or writes a descriptor at an offset goes through these three names.
_POSITIONAL = all(hasattr(os, name) for name in ("preadv", "pread", "pwrite"))
_SEEK_LOCK = threading.Lock()


def _positional_pread_into(fd: int, buf: memoryview, offset: int) -> int:
    return os.preadv(fd, [buf], offset)


def _seeking_pread_into(fd: int, buf: memoryview, offset: int) -> int:
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        with io.FileIO(fd, "rb", closefd=False) as f:  # os.readinto is new in Python 3.14
            return f.readinto(buf) or 0


def _seeking_pread(fd: int, length: int, offset: int) -> bytes:
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, length)


def _seeking_pwrite(fd: int, data: bytes | bytearray | memoryview, offset: int) -> int:
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


if _POSITIONAL:
    pread_into = _positional_pread_into
    pread = os.pread
    pwrite = os.pwrite
else:
    pread_into = _seeking_pread_into
    pread = _seeking_pread
    pwrite = _seeking_pwrite


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        n = pwrite(fd, view, offset)
        view = view[n:]
        offset += n


_SPLIT_AT = 2 * READ_SPLIT_MIN_PIECE if _POSITIONAL else sys.maxsize
_PAGE = mmap.PAGESIZE


def _preadv_full(fd: int, offset: int, buf: memoryview) -> int:
    """Fill ``buf`` from ``offset``; short only at the end of the file."""
    want = len(buf)
    # One call nearly always fills the buffer; only then loop (end of file, signals, or the
    # kernel's ~2 GiB cap per call), slicing the view just for the retries.
    total = pread_into(fd, buf, offset) if want else 0
    if total == want or total == 0:
        return total
    while total < want:
        n = pread_into(fd, buf[total:], offset + total)
        if n <= 0:
            break
        total += n
    return total


def _readinto_split(fd: int, offset: int, buf: memoryview, pieces: int) -> int:
    """``_preadv_full`` in ``pieces`` pieces: the first read here, the others by helper threads.

    Pieces start at whole pages of the buffer, so a page-aligned buffer stays page-aligned in
    every piece (the kernel copies several times slower into a misaligned destination).
    """
    want = len(buf)
    step = -(-want // pieces)
    step += -step % _PAGE
    bounds = list(range(0, want, step)) + [want]
    tasks = [helpers.submit(_preadv_full, fd, offset + lo, buf[lo:hi]) for lo, hi in zip(bounds[1:-1], bounds[2:])]
    counts: list[int] = []
    try:
        counts.append(_preadv_full(fd, offset, buf[: bounds[1]]))
    finally:
        # Every piece is waited for, even when this one failed: helpers write into ``buf``.
        errors: list[BaseException] = []
        for task in tasks:
            try:
                counts.append(task.wait())
            except BaseException as err:  # noqa: PERF203 - collected, the first is raised
                errors.append(err)
        if errors:
            raise errors[0]
    # The bytes read form a prefix: a short piece (the end of the file) ends it.
    total = 0
    for lo, hi, got in zip(bounds, bounds[1:], counts):
        total += got
        if got < hi - lo:
            break
    return total


# --- caller buffers at an awkward address -----------------------------------------------------
# Some CPUs copy from the page cache several times slower into a destination that does not start
# on a 64-byte boundary (engine/buffers.py; an AMD EPYC here: 1-31 bytes past one, about 4x
# slower; 32-63 bytes past one, no slower). Buffers we allocate are aligned, but a caller's
# bytearray or numpy array starts wherever malloc put it. For such a buffer, a large read goes
# through an aligned buffer of this thread's and then one memcpy, when that is faster on this
# machine: measured once per offset within a cache line (``_alignment_is_slow``), because on a
# CPU without the penalty the extra copy would only cost.
_CACHE_LINE = 64
_ALIGNMENT_SLOW: dict[int, bool] = {}
_ALIGNMENT_LOCK = threading.Lock()
_BOUNCE = threading.local()


def _address(buf: memoryview) -> int | None:
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(buf))
    except (TypeError, ValueError):  # read-only or empty: nothing to gain
        return None


def _alignment_is_slow(misalignment: int) -> bool:
    """Whether ``preadv`` into a buffer ``misalignment`` bytes past a cache line is much slower
    here than into an aligned one (more than ALIGNMENT_PENALTY times). Measured on first use
    with a memfd (page-cache memory, the same kernel copy as a file's): about 2 ms, once."""
    known = _ALIGNMENT_SLOW.get(misalignment)
    if known is not None:
        return known
    with _ALIGNMENT_LOCK:
        if misalignment not in _ALIGNMENT_SLOW:
            _ALIGNMENT_SLOW[misalignment] = _measure_alignment_penalty(misalignment) > ALIGNMENT_PENALTY
        return _ALIGNMENT_SLOW[misalignment]


def _measure_alignment_penalty(misalignment: int) -> float:
    """Best time into a misaligned buffer over best time into an aligned one (1.0 where no memfd)."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is None or not _POSITIONAL:
        return 1.0
    try:
        fd = memfd_create("vhdx-alignment-probe", getattr(os, "MFD_CLOEXEC", 0))
    except OSError:
        return 1.0
    try:
        return _time_alignment(fd, misalignment)
    except OSError:  # no room for the probe (a full /dev/shm quota, ENOMEM): read directly
        return 1.0
    finally:
        os.close(fd)


def _time_alignment(fd: int, misalignment: int) -> float:
    pwrite_all(fd, b"\x5a" * ALIGNMENT_PROBE_SIZE, 0)
    area = mmap.mmap(-1, ALIGNMENT_PROBE_SIZE + _PAGE)
    views = (memoryview(area)[:ALIGNMENT_PROBE_SIZE],
             memoryview(area)[misalignment : misalignment + ALIGNMENT_PROBE_SIZE])
    try:
        best = [float("inf"), float("inf")]
        for _ in range(ALIGNMENT_PROBE_ROUNDS):
            for i, view in enumerate(views):
                t = time.perf_counter()
                os.preadv(fd, [view], 0)
                best[i] = min(best[i], time.perf_counter() - t)
        return best[1] / best[0] if best[0] > 0 else 1.0
    finally:
        for view in views:
            view.release()
        area.close()


def _readinto_bounced(fd: int, offset: int, buf: memoryview) -> int:
    """``_read_aligned`` into this thread's aligned buffer, then one copy into ``buf``."""
    bounce: memoryview | None = getattr(_BOUNCE, "buffer", None)
    want = len(buf)
    if bounce is None or len(bounce) < min(want, ALIGNMENT_BOUNCE_SIZE):
        bounce = _BOUNCE.buffer = memoryview(mmap.mmap(-1, min(max(want, _PAGE), ALIGNMENT_BOUNCE_SIZE)))
    total = 0
    while total < want:
        n = min(len(bounce), want - total)
        got = _read_aligned(fd, offset + total, bounce[:n])
        buf[total : total + got] = bounce[:got]
        total += got
        if got < n:
            break
    return total


def _read_aligned(fd: int, offset: int, buf: memoryview) -> int:
    """Fill ``buf`` from ``offset``, split across helper threads when it is large enough."""
    want = len(buf)
    if want >= _SPLIT_AT:
        pieces = min(helpers.count() + 1, want // READ_SPLIT_MIN_PIECE)
        if pieces > 1:
            return _readinto_split(fd, offset, buf, pieces)
    return _preadv_full(fd, offset, buf)


class FileSource:
    """A file descriptor read with ``os.preadv`` (no seek, thread-safe reads)."""

    def __init__(self, fd: int, name: str, *, writable: bool, closefd: bool) -> None:
        self.fd = fd
        self.name = name
        self.writable = writable
        self._closefd = closefd
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise ValueError(f"{name}: not a regular file or block device")
        self._is_block = stat.S_ISBLK(st.st_mode)

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, writable: bool) -> FileSource:
        """Open ``path`` (README "Hostile input" states the rules).

        Reading follows symbolic links and accepts regular files and block devices (an image
        stored on a raw partition or volume). Writing accepts only a regular file named directly:
        a symbolic link is refused (``O_NOFOLLOW``), so a link planted where an image is expected
        cannot redirect writes elsewhere; give the link's target to write through it. A FIFO, a
        socket or a character device is refused without blocking (``O_NONBLOCK``: opening a FIFO
        would otherwise wait for a writer forever).

        Raises:
            ValueError: the path names a kind of file that cannot hold an image (or, for writing,
                a symbolic link or a block device).
            OSError: the operating system refused the open.
        """
        flags = (os.O_RDWR if writable else os.O_RDONLY) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        flags |= getattr(os, "O_NONBLOCK", 0)
        if writable:
            flags |= getattr(os, "O_NOFOLLOW", 0)
        noatime = 0 if writable else getattr(os, "O_NOATIME", 0)
        try:
            # Evidence is read without touching its access time (Linux O_NOATIME; allowed to the
            # file's owner and to root, refused with EPERM to others, who then open normally).
            fd = os.open(path, flags | noatime)
        except PermissionError:
            if not noatime:
                raise
            fd = os.open(path, flags)
        except OSError as err:
            if writable and err.errno == errno.ELOOP and os.path.islink(path):
                raise ValueError(f"{os.fspath(path)}: is a symbolic link; it is not opened for writing (give its "
                                 f"target, {os.path.realpath(path)}, to write through it)") from None
            raise
        try:
            if hasattr(os, "set_blocking"):
                os.set_blocking(fd, True)  # O_NONBLOCK was for the open only
            source = cls(fd, os.fspath(path), writable=writable, closefd=True)
            if writable and source._is_block:
                raise ValueError(f"{os.fspath(path)}: is a block device; images on devices are opened read-only "
                                 "(the file could not grow)")
            return source
        except BaseException:
            os.close(fd)
            raise

    def size(self) -> int:
        if self._is_block:
            return os.lseek(self.fd, 0, os.SEEK_END)
        return os.fstat(self.fd).st_size

    def readinto(self, offset: int, buf: memoryview) -> int:
        want = len(buf)
        if want >= ALIGNED_BUFFER_MIN:
            address = _address(buf)
            if address is not None and address % _CACHE_LINE and _alignment_is_slow(address % _CACHE_LINE):
                return _readinto_bounced(self.fd, offset, buf)
            return _read_aligned(self.fd, offset, buf)
        # The first call inline (small random reads are the hot path); _preadv_full finishes the
        # rare short read.
        total = pread_into(self.fd, buf, offset) if want else 0
        if total == want or total == 0:
            return total
        return total + _preadv_full(self.fd, offset + total, buf[total:])

    def pread(self, offset: int, length: int) -> bytes:
        return pread(self.fd, length, offset)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        pwrite_all(self.fd, data, offset)

    def truncate(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if self._closefd and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


class FileObjectSource:
    """Any seekable binary file object (BytesIO, fsspec files, ...); a lock guards seek+read."""

    def __init__(self, fileobj: BinaryIO, name: str, *, writable: bool, closefd: bool) -> None:
        self.fileobj = fileobj
        self.name = name
        self.writable = writable
        self._closefd = closefd
        self._lock = threading.Lock()

    def size(self) -> int:
        with self._lock:
            return self.fileobj.seek(0, io.SEEK_END)

    def readinto(self, offset: int, buf: memoryview) -> int:
        with self._lock:
            self.fileobj.seek(offset)
            total = 0
            while total < len(buf):
                readinto = getattr(self.fileobj, "readinto", None)
                if readinto is not None:
                    n = readinto(buf[total:])
                else:
                    chunk = self.fileobj.read(len(buf) - total)
                    n = len(chunk)
                    buf[total : total + n] = chunk
                if not n:
                    break
                total += n
            return total

    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        n = self.readinto(offset, memoryview(buf))
        return bytes(buf[:n])

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            self.fileobj.seek(offset)
            self.fileobj.write(data)

    def truncate(self, size: int) -> None:
        with self._lock:
            self.fileobj.truncate(size)

    def sync(self) -> None:
        with self._lock:
            self.fileobj.flush()
            fileno = getattr(self.fileobj, "fileno", None)
            if fileno is not None:
                try:
                    os.fsync(fileno())
                except (OSError, io.UnsupportedOperation):
                    pass

    def close(self) -> None:
        if self._closefd:
            self.fileobj.close()


def source_for_fileobj(fileobj: BinaryIO, *, writable: bool, closefd: bool) -> RandomAccess:
    """Wrap a binary file object, using its descriptor directly when it has a real one."""
    name = str(getattr(fileobj, "name", None) or f"<{type(fileobj).__name__}>")
    try:
        fd = fileobj.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        fd = -1
    if fd >= 0:
        if writable:
            fileobj.flush()
        return FileSource(fd, name, writable=writable, closefd=False)
    return FileObjectSource(fileobj, name, writable=writable, closefd=closefd)


class OverlaySource:
    """Another source with 4 KiB sectors and zero ranges laid over it, held in memory.

    Reads see the overlay; writes are refused (this exists for read-only opens). ``size()`` is at
    least ``min_size`` (the log's LastFileOffset): bytes past the base file's end read as zero.
    """

    def __init__(self, base: RandomAccess, *, min_size: int = 0) -> None:
        self.base = base
        self.name = base.name
        self.writable = False
        self._min_size = min_size
        # Non-overlapping (start, end, data | None) ranges; None = zeros. Later writes win.
        self._starts: list[int] = []
        self._ranges: list[tuple[int, int, bytes | None]] = []

    def add(self, offset: int, data: bytes | None, length: int | None = None) -> None:
        """Lay ``data`` (or ``length`` zeros when data is None) over ``offset``."""
        end = offset + (len(data) if data is not None else int(length or 0))
        if end <= offset:
            return
        kept: list[tuple[int, int, bytes | None]] = []
        for s, e, d in self._ranges:
            if e <= offset or s >= end:
                kept.append((s, e, d))
                continue
            if s < offset:
                kept.append((s, offset, d[: offset - s] if d is not None else None))
            if e > end:
                kept.append((end, e, d[end - s :] if d is not None else None))
        kept.append((offset, end, data))
        kept.sort(key=lambda r: r[0])
        self._ranges = kept
        self._starts = [r[0] for r in kept]

    def add_many(self, writes: Iterable[tuple[int, bytes | None, int]]) -> None:
        """Lay ``(offset, data or None for zeros, length)`` writes over the source in one pass,
        later ones winning over earlier ones and over what was laid before.

        A log holds tens of thousands of writes per MiB (zero descriptors are 32 bytes each), in
        any order and overlapping at will, so one ``add`` after another (each reshaping the whole
        list) would take quadratic time; a sweep over the sorted boundaries takes O(n log n).
        """
        items: list[tuple[int, int, bytes | memoryview | None]] = list(self._ranges)  # oldest first
        for offset, data, length in writes:
            end = offset + (len(data) if data is not None else length)
            if end > offset:
                items.append((offset, end, data))
        if not items:
            return
        events = sorted([(s, 1, i) for i, (s, _, _) in enumerate(items)] + [(e, 0, i) for i, (_, e, _) in enumerate(items)])
        active: list[int] = []  # max-heap of item indices (later items win), ended ones dropped lazily
        ended: set[int] = set()
        pieces: list[tuple[int, int, bytes | memoryview | None]] = []
        current: tuple[int, int] | None = None  # (winning item, start of its piece)
        k = 0
        while k < len(events):
            x = events[k][0]
            while k < len(events) and events[k][0] == x:
                _, starting, i = events[k]
                if starting:
                    heapq.heappush(active, -i)
                else:
                    ended.add(i)
                k += 1
            while active and -active[0] in ended:
                heapq.heappop(active)
            winner = -active[0] if active else None
            if current is not None and current[0] != winner:
                i, start = current
                s, _, d = items[i]
                pieces.append((start, x, None if d is None else memoryview(d)[start - s : x - s]))
                current = None
            if winner is not None and current is None:
                current = (winner, x)
        self._ranges = pieces
        self._starts = [r[0] for r in pieces]

    @property
    def empty(self) -> bool:
        return not self._ranges

    def size(self) -> int:
        size = max(self.base.size(), self._min_size)
        if self._ranges:
            size = max(size, self._ranges[-1][1])
        return size

    def readinto(self, offset: int, buf: memoryview) -> int:
        want = min(len(buf), max(0, self.size() - offset))
        got = self.base.readinto(offset, buf[:want])
        if got < want:
            buf[got:want] = bytes(want - got)  # past the real end: the log extended the file
        end = offset + want
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while i < len(self._ranges):
            s, e, d = self._ranges[i]
            if s >= end:
                break
            lo, hi = max(s, offset), min(e, end)
            if lo < hi:
                if d is None:
                    buf[lo - offset : hi - offset] = bytes(hi - lo)
                else:
                    buf[lo - offset : hi - offset] = d[lo - s : hi - s]
            i += 1
        return want

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        raise PermissionError(f"{self.name}: the in-memory log replay overlay is read-only")

    def truncate(self, size: int) -> None:
        raise PermissionError(f"{self.name}: the in-memory log replay overlay is read-only")

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self.base.close()


# --- remote files (fsspec) ------------------------------------------------------------------------

# A URL has a scheme of two or more letters before "://" (so "C://x" stays a Windows path), or is
# an fsspec chain such as "simplecache::s3://bucket/key".
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]+::)*[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(name: object) -> bool:
    """Whether ``name`` is a URL to read through fsspec rather than a local path."""
    return isinstance(name, str) and _URL.match(name) is not None


@dataclass(frozen=True)
class RemoteOptions:
    """How remote images (fsspec URLs) are read.

    Attributes:
        cache_block_size: reads smaller than this fetch the aligned block around them and cache it.
        cache_blocks: blocks kept (least recently used first out): the cache holds at most
            ``cache_block_size * cache_blocks`` bytes per open file.
        storage_options: passed to the fsspec filesystem (credentials, endpoints, ...).
    """

    cache_block_size: int = REMOTE_CACHE_BLOCK_SIZE
    cache_blocks: int = REMOTE_CACHE_BLOCKS
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.cache_block_size <= 0 or self.cache_blocks < 0:
            raise ValueError(f"invalid remote cache: {self.cache_blocks} blocks of {self.cache_block_size} bytes")


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError:
        raise UnsupportedError("reading images by URL needs fsspec: pip install 'vhdx[remote]' (and s3fs, gcsfs "
                               "or adlfs for s3://, gs:// and az://)") from None
    return fsspec


class RemoteSource:
    """A file on an fsspec filesystem, read by byte ranges (read-only).

    A read smaller than ``cache_block_size`` fetches the aligned block(s) around it once and keeps
    them in an LRU cache of ``cache_blocks`` blocks, so the many small reads of opening an image
    (headers, region tables, metadata, sector bitmaps) cost a few requests; a larger read (the BAT,
    payload) is fetched exactly, without caching. ``bytes_fetched`` and ``requests`` count what
    went over the wire (``requests`` includes the one that asked for the file's size).
    """

    def __init__(self, fs: Any, path: str, name: str, options: RemoteOptions) -> None:
        self.fs = fs
        self.path = path
        self.name = name
        self.options = options
        self.writable = False
        self.bytes_fetched = 0
        self.requests = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()
        info = self._call(fs.info, path)
        self.requests += 1
        if info.get("type") == "directory":
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        size = info.get("size")
        if size is None:
            raise OSError(errno.EIO, "the server does not report the file's size", name)
        self._size = int(size)

    @classmethod
    def open(cls, url: str, *, options: RemoteOptions | None = None) -> RemoteSource:
        """Open ``url`` for reading.

        Raises:
            FileNotFoundError: nothing at ``url``.
            UnsupportedError: fsspec (or the package for the URL's scheme) is not installed.
            OSError: the store cannot be reached or refused the request.
        """
        options = options or RemoteOptions()
        fsspec = _fsspec()
        try:
            fs, path = fsspec.core.url_to_fs(url, **dict(options.storage_options))
        except ImportError as err:
            raise UnsupportedError(f"cannot read this URL: {err}", image=url) from None
        except ValueError as err:  # an unknown protocol
            raise UnsupportedError(f"cannot read this URL: {err}", image=url) from None
        return cls(fs, path, url, options)

    def sibling(self, url: str) -> RemoteSource:
        """Open another file of the same store with the same options (a parent of a chain)."""
        return RemoteSource.open(url, options=self.options)

    @property
    def identity(self) -> tuple[str, str]:
        """What tells two open files apart (a chain must not loop)."""
        protocol = self.fs.protocol
        return (protocol if isinstance(protocol, str) else protocol[0], self.path)

    @property
    def cached_bytes(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._cache.values())

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the filesystem, turning its errors into OSError naming this file."""
        try:
            return function(*args, **kwargs)
        except FileNotFoundError as err:
            # fsspec's HTTP filesystem reports any failure to learn a file's size (connection
            # refused, HTTP 500, ...) as "not found", with the real error as the cause.
            cause = err.__cause__
            if cause is not None and not isinstance(cause, FileNotFoundError) and getattr(cause, "status", None) != 404:
                text = " ".join(str(cause).split()) or type(cause).__name__
                raise OSError(errno.EIO, f"{type(cause).__name__}: {text}", self.name) from cause
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.name) from None
        except PermissionError:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), self.name) from None
        except OSError as err:
            if err.filename is not None:
                raise
            raise OSError(err.errno or errno.EIO, err.strerror or f"{type(err).__name__}: {err}", self.name) from err
        except (UnsupportedError, ValueError, TypeError):
            raise
        except Exception as err:  # aiohttp, botocore, ...: one line that says what failed
            raise OSError(errno.EIO, f"{type(err).__name__}: {err}", self.name) from err

    def _fetch(self, start: int, end: int) -> bytes:
        data = self._call(self.fs.cat_file, self.path, start=start, end=end)
        with self._lock:
            self.bytes_fetched += len(data)
            self.requests += 1
        if len(data) > end - start:
            raise OSError(errno.EIO, f"asked for bytes {start}-{end - 1} and got {len(data)} bytes: the server "
                          "ignores byte ranges (HTTP Range requests are needed)", self.name)
        return bytes(data)

    def size(self) -> int:
        return self._size

    def readinto(self, offset: int, buf: memoryview) -> int:
        want = min(len(buf), max(0, self._size - offset))
        if want <= 0:
            return 0
        bs = self.options.cache_block_size
        if want >= bs or self.options.cache_blocks == 0:
            done = 0
            while done < want:
                n = min(REMOTE_MAX_REQUEST, want - done)
                data = self._fetch(offset + done, offset + done + n)
                buf[done : done + len(data)] = data
                done += len(data)
                if len(data) < n:
                    break
            return done
        first, last = offset // bs, (offset + want - 1) // bs
        blocks: dict[int, bytes] = {}
        with self._lock:
            for b in range(first, last + 1):
                data = self._cache.get(b)
                if data is not None:
                    self._cache.move_to_end(b)
                    blocks[b] = data
            self.cache_hits += len(blocks)
            self.cache_misses += last + 1 - first - len(blocks)
        missing = [b for b in range(first, last + 1) if b not in blocks]
        if missing:
            # At most two blocks are concerned (the read is smaller than a block): one request.
            lo, hi = missing[0] * bs, min((missing[-1] + 1) * bs, self._size)
            data = self._fetch(lo, hi)
            with self._lock:
                for b in missing:
                    piece = data[b * bs - lo : (b + 1) * bs - lo]
                    blocks[b] = piece
                    self._cache[b] = piece
                    self._cache.move_to_end(b)
                while len(self._cache) > self.options.cache_blocks:
                    self._cache.popitem(last=False)
        done = 0
        for b in range(first, last + 1):
            data = blocks[b]
            lo = offset + done - b * bs
            n = min(want - done, len(data) - lo)
            if n <= 0:
                break
            buf[done : done + n] = data[lo : lo + n]
            done += n
        return done

    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, length))
        n = self.readinto(offset, memoryview(buf))
        return bytes(buf[:n])

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        raise ReadOnlyError("remote images are read-only", image=self.name)

    def truncate(self, size: int) -> None:
        raise ReadOnlyError("remote images are read-only", image=self.name)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        with self._lock:
            self._cache.clear()


def open_source(name: str | os.PathLike[str], *, writable: bool = False,
                remote: RemoteOptions | None = None) -> FileSource | RemoteSource:
    """Open a local path (``FileSource``) or a URL (``RemoteSource``, read-only).

    Raises:
        ReadOnlyError: ``writable`` with a URL.
    """
    if is_url(name):
        if writable:
            raise ReadOnlyError("images given by URL open read-only (copy the file to change it)", image=str(name))
        return RemoteSource.open(str(name), options=remote)
    return FileSource.open(name, writable=writable)


def source_identity(source: RandomAccess) -> tuple[object, ...] | None:
    """(device, inode) of a local file, (protocol, path) of a remote one; None when unknown."""
    remote = getattr(source, "identity", None)
    if remote is not None:
        return tuple(remote)
    fd = getattr(source, "fd", None)
    if fd is None or fd < 0:
        return None
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)
