"""Random-access byte sources: the only module below the public API that performs I/O.

``FileSource`` reads through a file descriptor with ``os.preadv`` straight into the caller's
buffer; ``FileObjectSource`` adapts any seekable binary file object; ``OverlaySource`` lays the
writes of an unreplayed log over another source, in memory, so that a read-only open never writes
the file (VHDX-FORMAT.md 10.5).
"""

from __future__ import annotations

import bisect
import io
import os
import stat
import threading
from typing import BinaryIO, Protocol, runtime_checkable

from ..errors import TruncatedError


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
        flags = (os.O_RDWR if writable else os.O_RDONLY) | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        try:
            return cls(fd, os.fspath(path), writable=writable, closefd=True)
        except BaseException:
            os.close(fd)
            raise

    def size(self) -> int:
        if self._is_block:
            return os.lseek(self.fd, 0, os.SEEK_END)
        return os.fstat(self.fd).st_size

    def readinto(self, offset: int, buf: memoryview) -> int:
        want = len(buf)
        # One call nearly always fills the buffer; only then loop (end of file, signals, or the
        # kernel's ~2 GiB cap per call), slicing the view just for the retries.
        total = os.preadv(self.fd, [buf], offset) if want else 0
        if total == want or total == 0:
            return total
        while total < want:
            n = os.preadv(self.fd, [buf[total:]], offset + total)
            if n <= 0:
                break
            total += n
        return total

    def pread(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

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
