"""The public file-like object: VirtualDisk, and ``open()``.

``VirtualDisk`` is an ``io.RawIOBase`` over the virtual disk of a VHDX file (and its chain of
parents). Reads fill the caller's buffer directly; any offset and length is accepted; reading at
or past the end returns nothing. Ownership follows ``open()``: a path is opened and closed by us,
a file object given by the caller is left open. Concurrent reads from several threads are safe
when each uses its own ``VirtualDisk`` position (``pread``); one object is not meant to be shared
by threads that seek.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import BinaryIO, Literal

from .engine.chain import ChainOptions, build_engine
from .engine.engine import BlockEngine
from .engine.mapping import Extent, merge
from .engine.source import FileSource, RandomAccess, RemoteOptions, RemoteSource, is_url, open_source, source_for_fileobj
from .engine.writer import WritableEngine
from .errors import ReadOnlyError, VhdxError
from .info import DiskInfo, describe

DiskType = Literal["fixed", "dynamic", "differencing"]


class VirtualDisk(io.RawIOBase):
    """The virtual disk of a VHDX image, as a seekable binary stream.

    Attributes:
        size: virtual size in bytes.
        block_size, logical_sector_size, physical_sector_size: geometry from the metadata.
        disk_id: the Virtual Disk ID.
        disk_type: ``"fixed"``, ``"dynamic"`` or ``"differencing"``.
        parent: the parent disk of a differencing image (None otherwise, or when it was not found
            and ``require_parent=False``).
        has_pending_log: the file holds an unreplayed log (replayed in memory for this open).
    """

    def __init__(self, engine: BlockEngine, *, mode: str = "rb", name: str | None = None, owner: bool = True) -> None:
        super().__init__()
        self._engine = engine
        self._owner = owner  # the parents of a chain are closed with the child that holds them
        self._mode = mode
        self._pos = 0
        self.name = name if name is not None else engine.image.name
        image = engine.image
        self.size: int = engine.size
        self.block_size: int = image.geometry.block_size
        self.logical_sector_size: int = image.geometry.logical_sector_size
        self.physical_sector_size: int = image.metadata.physical_sector_size
        self.disk_id: uuid.UUID = image.metadata.virtual_disk_id
        self.disk_type: DiskType = image.disk_type  # type: ignore[assignment]
        self.has_pending_log: bool = image.log_replayed_in_memory
        self.parent: VirtualDisk | None = (
            VirtualDisk(engine.parent, mode="rb", owner=False) if engine.parent is not None else None
        )

    # --- io.RawIOBase ------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    def readable(self) -> bool:
        self._check_open()
        return True

    def writable(self) -> bool:
        self._check_open()
        return isinstance(self._engine, WritableEngine)

    def seekable(self) -> bool:
        self._check_open()
        return True

    def tell(self) -> int:
        self._check_open()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed disk")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, b: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed disk")
        view = memoryview(b).cast("B")
        pos = self._pos
        n = min(len(view), self.size - pos)
        if n <= 0:
            return 0
        self._engine.read_into(pos, view if n == len(view) else view[:n])
        self._pos = pos + n
        return n

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed disk")
        pos = self._pos
        n = self.size - pos
        if size is not None and 0 <= size < n:
            n = size
        if n <= 0:
            return b""
        data = self._engine.read_bytes(pos, n)  # a single pread when the range allows it
        self._pos = pos + n
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def pread(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` without moving the position (thread-safe)."""
        self._check_open()
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length ({offset}, {length})")
        n = min(length, self.size - offset)
        if n <= 0:
            return b""
        return self._engine.read_bytes(offset, n)

    def write(self, b: object) -> int:  # type: ignore[override]
        """Write ``b`` at the current position; the disk never grows (a write past the end is
        an error, as on a block device). Returns the byte count."""
        engine = self._writable_engine()
        view = memoryview(b).cast("B")  # type: ignore[arg-type]
        pos = self._pos
        if pos + len(view) > self.size:
            raise ValueError(f"write of {len(view)} bytes at {pos} passes the end of the {self.size}-byte disk")
        engine.write(pos, view)
        self._pos = pos + len(view)
        return len(view)

    def pwrite(self, offset: int, data: bytes | bytearray | memoryview) -> int:
        """Write ``data`` at ``offset`` without moving the position."""
        engine = self._writable_engine()
        view = memoryview(data).cast("B")
        if offset < 0 or offset + len(view) > self.size:
            raise ValueError(f"write of {len(view)} bytes at {offset} is outside the {self.size}-byte disk")
        engine.write(offset, view)
        return len(view)

    def write_zeroes(self, offset: int, length: int) -> None:
        """Make [offset, offset + length) read as zeros; whole blocks of dynamic and differencing
        disks become ZERO blocks instead of being written."""
        self._check_range(offset, length)
        self._writable_engine().zero_range(offset, length, discard=False)

    def discard(self, offset: int, length: int) -> None:
        """Tell the disk that [offset, offset + length) is unused: whole blocks of dynamic and
        differencing disks are unmapped (they read as zeros afterwards); partial blocks and fixed
        disks keep their data."""
        self._check_range(offset, length)
        self._writable_engine().zero_range(offset, length, discard=True)

    def flush(self) -> None:
        """Make every write so far durable (payload synced, metadata committed through the log)."""
        if self.closed:
            return
        engine = self._engine
        if isinstance(engine, WritableEngine):
            engine.flush()

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"range {offset}+{length} is outside the {self.size}-byte disk")

    def _writable_engine(self) -> WritableEngine:
        self._check_open()
        if not isinstance(self._engine, WritableEngine):
            raise ReadOnlyError(f"{self.name} is open read-only")
        return self._engine

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation(f"{self.name}: a virtual disk's size is changed by resizing the image")

    def fileno(self) -> int:
        raise io.UnsupportedOperation("a virtual disk has no file descriptor")

    def close(self) -> None:
        if not self.closed:
            try:
                if self._owner:
                    self._engine.close()
            finally:
                super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed disk")

    # --- inspection -------------------------------------------------------------------------------
    def remote_stats(self) -> dict[str, int] | None:
        """For an image read by URL: what its files (the chain's remote ones) cost so far, as
        ``bytes_fetched``, ``requests``, ``cache_hits``, ``cache_misses``, ``cached_bytes`` (held in
        the block caches now) and ``remote_files``; None when every file is local."""
        self._check_open()
        totals = {"bytes_fetched": 0, "requests": 0, "cache_hits": 0, "cache_misses": 0, "cached_bytes": 0,
                  "remote_files": 0}
        engine: BlockEngine | None = self._engine
        while engine is not None:
            raw = engine.image.raw_source
            if isinstance(raw, RemoteSource):
                totals["bytes_fetched"] += raw.bytes_fetched
                totals["requests"] += raw.requests
                totals["cache_hits"] += raw.cache_hits
                totals["cache_misses"] += raw.cache_misses
                totals["cached_bytes"] += raw.cached_bytes
                totals["remote_files"] += 1
            engine = engine.parent
        return totals if totals["remote_files"] else None

    def extents(self, offset: int = 0, length: int | None = None, *, include_parent: bool = True) -> Iterator[Extent]:
        """Yield the allocation map of [offset, offset + length): merged ``Extent`` runs with their
        state (``data``, ``zero``, ``unallocated``), file offset and depth in the chain."""
        self._check_open()
        engine = self._engine
        if include_parent:
            return merge(engine.extents(offset, length))
        return merge(_top_layer(engine.extents(offset, length)))

    def info(self) -> DiskInfo:
        """A snapshot of everything known about the image (and its chain)."""
        self._check_open()
        return describe(self._engine)

    @property
    def chain(self) -> list[VirtualDisk]:
        """This disk, then its parent, grandparent, ..."""
        out: list[VirtualDisk] = []
        disk: VirtualDisk | None = self
        while disk is not None:
            out.append(disk)
            disk = disk.parent
        return out

    def __repr__(self) -> str:
        return f"<VirtualDisk {self.name!r} {self.disk_type} size={self.size}>"


def _top_layer(extents: Iterator[Extent]) -> Iterator[Extent]:
    for e in extents:
        yield e if e.depth == 0 else Extent(e.virtual_offset, e.length, "unallocated", None, 1)


def open(  # noqa: A001 - mirrors the builtin, as gzip.open and zipfile do
    file: str | os.PathLike[str] | BinaryIO,
    mode: str = "rb",
    *,
    parent_search: Sequence[str | os.PathLike[str]] = (),
    parent: str | os.PathLike[str] | VirtualDisk | None = None,
    ignore_id_mismatch: bool = False,
    require_parent: bool = True,
    remote: RemoteOptions | None = None,
    allow_damaged: bool = False,
) -> VirtualDisk:
    """Open a VHDX image.

    Args:
        file: a path, a URL read through fsspec (``s3://``, ``gs://``, ``az://``, ``http(s)://``,
            ``file://``, ``memory://``, ...; read-only, by byte ranges: the optional extra
            ``vhdx[remote]``, plus s3fs/gcsfs/adlfs for those stores), or a seekable binary file
            object (left open when the disk is closed). A differencing image given by URL finds its
            parent next to it on the same store.
        mode: ``"rb"`` (the default; the file is opened read-only and never written) or ``"r+b"``
            (read-write: a pending log is replayed in place first; opening and closing without
            writing leaves the file byte-identical).
        parent_search: extra folders in which to look for parents of a differencing disk.
        parent: the parent to use for a differencing disk instead of the locator's paths.
        ignore_id_mismatch: accept a parent whose DataWriteGuid does not match the child's
            parent_linkage (Hyper-V's ``-IgnoreIdMismatch``).
        require_parent: when False, a differencing disk whose parent cannot be found still opens
            (for inspection); reads that need the parent raise ``ParentNotFoundError``.
        remote: for a URL, the block cache and fsspec storage options (``RemoteOptions``).
        allow_damaged: for ``"r+b"``, write even though the open found damage that reads
            tolerate (``RepairNeededError`` otherwise; README "Hostile input").

    Returns:
        A ``VirtualDisk`` positioned at 0.

    Raises:
        VhdxError: the file is not a readable VHDX (a subclass says why); ``ReadOnlyError`` for
            ``"r+b"`` with a URL; ``UnsupportedError`` when fsspec (or the store's package) is missing.
        OSError: the file cannot be opened (``FileNotFoundError`` for a missing URL too).
    """
    if mode not in ("rb", "r", "r+b", "rb+"):
        raise ValueError(f"invalid mode {mode!r} (use 'rb' or 'r+b')")
    writable = "+" in mode
    explicit: str | os.PathLike[str] | BlockEngine | None
    explicit = parent._engine if isinstance(parent, VirtualDisk) else parent
    engine = open_engine(file, writable=writable, parent_search=parent_search, parent=explicit,
                         ignore_id_mismatch=ignore_id_mismatch, require_parent=require_parent, remote=remote,
                         allow_damaged=allow_damaged)
    return VirtualDisk(engine, mode="r+b" if writable else "rb")


def open_engine(
    file: str | os.PathLike[str] | BinaryIO,
    *,
    writable: bool = False,
    parent_search: Sequence[str | os.PathLike[str]] = (),
    parent: str | os.PathLike[str] | BlockEngine | None = None,
    ignore_id_mismatch: bool = False,
    require_parent: bool = True,
    remote: RemoteOptions | None = None,
    allow_damaged: bool = False,
) -> BlockEngine:
    """Open the block engine behind ``open()``, for the operations (``vhdx.ops``) that work on
    BATs and metadata rather than bytes: a ``WritableEngine`` when ``writable``, locked against
    other writers. Arguments as for ``open()``; the caller closes the engine."""
    source: RandomAccess
    if is_url(file):  # read-only: ReadOnlyError for a writable open
        source = open_source(file, writable=writable, remote=remote)  # type: ignore[arg-type]
    elif isinstance(file, (str, os.PathLike)):
        source = FileSource.open(file, writable=writable)
    elif hasattr(file, "read") and hasattr(file, "seek"):
        source = source_for_fileobj(file, writable=writable, closefd=False)
    else:
        raise TypeError(f"expected a path or a binary file object, not {type(file).__name__}")
    if writable:
        try:
            _lock(source)
        except BaseException:
            source.close()
            raise
    options = ChainOptions(parent_search=parent_search, parent=parent, ignore_id_mismatch=ignore_id_mismatch,
                           require_parent=require_parent, writable=writable, allow_damaged=allow_damaged)
    try:
        return build_engine(source, options)
    except BaseException:
        source.close()
        raise


def _lock(source: RandomAccess) -> None:
    """Take an exclusive advisory lock for a writer: two writers would corrupt the image."""
    fd = getattr(source, "fd", -1)
    if fd < 0:
        return
    try:
        import fcntl
    except ImportError:  # Windows: the OS refuses a second writer itself
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise VhdxError("the image is already open for writing by another process or handle",
                        image=source.name) from None


__all__ = ["DiskType", "VirtualDisk", "open", "open_engine", "VhdxError"]
