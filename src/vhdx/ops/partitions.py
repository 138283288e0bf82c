"""Partitions of a virtual disk: list them (MBR and GPT), and extract one (streamed, sparse)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..constants import MiB
from ..disk import VirtualDisk
from ..engine import source as fileio
from ..engine.buffers import io_buffer
from ..errors import VhdxError
from ..model.partitions import Partition, PartitionTable, read_partition_table
from ..newfile import discard, make_temp, publish
from .progress import ProgressCallback, ProgressReporter
from .result import OperationResult

COPY_CHUNK = 8 * MiB  # bytes per read when extracting


def list_partitions(disk: VirtualDisk) -> PartitionTable:
    """The partition table of ``disk`` (scheme "gpt", "mbr" or "none"; damage in ``problems``)."""
    return read_partition_table(disk.pread, disk.size, disk.logical_sector_size)


def find_partition(disk: VirtualDisk, index: int) -> Partition:
    table = list_partitions(disk)
    for part in table.partitions:
        if part.index == index:
            if part.kind == "extended":
                raise VhdxError(f"partition {index} is an MBR extended partition (a container of logical "
                                "partitions, numbered from 5)", image=disk.name)
            return part
    have = ", ".join(str(p.index) for p in table.partitions) or "none"
    raise VhdxError(f"no partition {index} ({table.scheme} table; partitions: {have})", image=disk.name)


class PartitionWindow:
    """Reads (and, on a writable disk, writes) of one partition, by offset inside the partition."""

    def __init__(self, disk: VirtualDisk, partition: Partition) -> None:
        self.disk = disk
        self.start = partition.start
        self.size = max(0, min(partition.length, disk.size - partition.start))

    def pread(self, offset: int, length: int) -> bytes:
        n = max(0, min(length, self.size - offset))
        return self.disk.pread(self.start + offset, n) if n else b""

    def pwrite(self, offset: int, data: bytes) -> int:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"write of {len(data)} bytes at {offset} passes the end of the {self.size}-byte partition")
        return self.disk.pwrite(self.start + offset, data)


@dataclass(frozen=True)
class ExtractResult(OperationResult):
    source: str
    destination: str
    partition: int
    start: int
    length: int
    bytes_read: int
    bytes_written: int
    file_size_after: int
    seconds: float


def extract_partition(disk: VirtualDisk, index: int, destination: str | os.PathLike[str], *,
                      overwrite: bool = False, progress: ProgressCallback | None = None) -> ExtractResult:
    """Write partition ``index`` of ``disk`` to a raw file, leaving holes where the disk reads as
    zeros without storage (the allocation map says so), and publishing it atomically."""
    t0 = time.perf_counter()
    part = find_partition(disk, index)
    window = PartitionWindow(disk, part)
    dst = os.fspath(destination)
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(dst)
    reporter = ProgressReporter(progress, "extracting", window.size)
    reporter.start()
    fd, tmp = make_temp(dst)
    read = written = 0
    try:
        view = io_buffer(COPY_CHUNK)
        for extent in disk.extents(part.start, window.size):
            if extent.state != "data":
                reporter.advance(extent.length)
                continue
            pos, end = extent.virtual_offset, extent.virtual_offset + extent.length
            while pos < end:
                n = min(COPY_CHUNK, end - pos)
                disk.seek(pos)
                disk.readinto(view[:n])
                fileio.pwrite_all(fd, view[:n], pos - part.start)
                read += n
                written += n
                reporter.advance(n)
                pos += n
        os.ftruncate(fd, window.size)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        publish(tmp, dst, overwrite=overwrite)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        discard(tmp)
        raise
    reporter.finish()
    return ExtractResult(source=disk.name, destination=dst, partition=index, start=part.start, length=window.size,
                         bytes_read=read, bytes_written=written, file_size_after=window.size,
                         seconds=time.perf_counter() - t0)


__all__ = ["ExtractResult", "Partition", "PartitionTable", "PartitionWindow", "extract_partition", "find_partition",
           "list_partitions"]
