"""Hashes of the virtual disk's content (what hashing the equivalent raw disk gives), several
algorithms in one pass, optionally per partition too.

The disk is read once, in large chunks straight into one buffer; each chunk is fed to every
hasher of the whole disk and to the hashers of the partitions it overlaps. hashlib releases the
GIL on large inputs, so the algorithms of one chunk run in parallel threads while the next
chunk is read.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..constants import MiB
from ..disk import VirtualDisk
from ..engine.buffers import io_buffer
from ..errors import VhdxError
from ..model.partitions import Partition
from .partitions import list_partitions
from .progress import ProgressCallback, ProgressReporter
from .result import OperationResult

DEFAULT_ALGORITHMS = ("sha256",)
HASH_CHUNK = 8 * MiB  # bytes read per step


@dataclass(frozen=True)
class PartitionDigest(OperationResult):
    index: int
    start: int
    length: int
    digests: dict[str, str]


@dataclass(frozen=True)
class HashResult(OperationResult):
    image: str
    virtual_size: int
    algorithms: tuple[str, ...]
    digests: dict[str, str]
    partitions: tuple[PartitionDigest, ...] = field(default_factory=tuple)
    bytes_read: int = 0
    seconds: float = 0.0


def check_algorithms(names: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Normalise and validate hashlib algorithm names (``sha256``, ``sha1``, ``md5``, ``blake2b`` ...)."""
    out = []
    for name in names:
        n = name.strip().lower().replace("-", "")
        if not n:
            continue
        if n.startswith("shake"):
            raise ValueError(f"{name}: variable-length digests are not supported")
        try:
            hashlib.new(n)
        except ValueError:
            raise ValueError(f"unknown hash algorithm {name!r} (available: "
                             f"{', '.join(sorted(a for a in hashlib.algorithms_available if 'shake' not in a))})") from None
        if n not in out:
            out.append(n)
    if not out:
        raise ValueError("no hash algorithm given")
    return tuple(out)


def hash_disk(disk: VirtualDisk, algorithms: tuple[str, ...] | list[str] = DEFAULT_ALGORITHMS, *,
              partitions: bool = False, progress: ProgressCallback | None = None) -> HashResult:
    """Hash the whole virtual disk (and each partition when asked) in one pass."""
    t0 = time.perf_counter()
    algorithms = check_algorithms(algorithms)
    whole = [hashlib.new(a) for a in algorithms]
    parts: list[tuple[Partition, list[Any]]] = []
    if partitions:
        parts = [(p, [hashlib.new(a) for a in algorithms]) for p in list_partitions(disk).partitions
                 if p.kind != "extended" and p.start < disk.size]
    size = disk.size
    reporter = ProgressReporter(progress, "hashing", size)
    reporter.start()
    buffers = [io_buffer(HASH_CHUNK), io_buffer(HASH_CHUNK)]
    done = 0
    with ThreadPoolExecutor(max_workers=max(1, len(algorithms))) as pool:
        pending: list[Any] = []
        turn = 0
        while done < size:
            n = min(HASH_CHUNK, size - done)
            view = memoryview(buffers[turn])[:n]
            disk.seek(done)
            got = disk.readinto(view)
            if got != n:
                raise VhdxError(f"short read at virtual offset {done}", image=disk.name)
            for f in pending:  # the previous chunk's hashing must finish before its buffer is reused
                f.result()
            jobs = [(h, view) for h in whole]
            for p, hashers in parts:
                lo, hi = max(done, p.start), min(done + n, p.end, size)
                if lo < hi:
                    jobs += [(h, view[lo - done : hi - done]) for h in hashers]
            pending = [pool.submit(_feed, hashers_group) for hashers_group in _group(jobs, len(algorithms))]
            done += n
            turn ^= 1
            reporter.update(done)
        for f in pending:
            f.result()
    reporter.finish()
    return HashResult(
        image=disk.name, virtual_size=size, algorithms=algorithms,
        digests={a: h.hexdigest() for a, h in zip(algorithms, whole)},
        partitions=tuple(PartitionDigest(p.index, p.start, min(p.length, size - p.start),
                                         {a: h.hexdigest() for a, h in zip(algorithms, hs)}) for p, hs in parts),
        bytes_read=size, seconds=time.perf_counter() - t0)


def _group(jobs: list[tuple[Any, memoryview]], groups: int) -> list[list[tuple[Any, memoryview]]]:
    """Split the (hasher, data) jobs into ``groups`` lists, keeping each hasher's jobs in order."""
    out: list[list[tuple[Any, memoryview]]] = [[] for _ in range(groups)]
    for i, job in enumerate(jobs):
        out[i % groups].append(job)
    return [g for g in out if g]


def _feed(jobs: list[tuple[Any, memoryview]]) -> None:
    for hasher, data in jobs:
        hasher.update(data)


__all__ = ["DEFAULT_ALGORITHMS", "HashResult", "PartitionDigest", "check_algorithms", "hash_disk"]
