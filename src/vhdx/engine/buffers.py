"""Buffers for large reads: page-aligned, because where a buffer starts decides the read's speed.

On some CPUs the kernel copies from the page cache several times slower into a destination that
starts inside a cache line (measured here, an AMD EPYC with FSRM: 1-31 bytes past a 64-byte
boundary ran about 4x slower, 32-63 bytes past one no slower; ``os.preadv`` of 8 MiB into a
``bytearray`` ran at 1.7 GB/s, into a page-aligned buffer at 7-8 GB/s). A large
``bytearray`` starts 16 bytes past a page boundary (its allocation header), so every loop that
reads big chunks uses ``io_buffer`` instead. Writes from a misaligned buffer showed no such cost.
(A caller's own misaligned buffer is handled in engine/source.py: a bounce through an aligned one
where a one-time probe finds the penalty.)
"""

from __future__ import annotations

import mmap


def io_buffer(size: int) -> memoryview:
    """A zero-filled writable buffer of ``size`` bytes that starts on a page boundary.

    It is anonymous memory of its own (``mmap``), freed with the last view of it.
    """
    if size < 0:
        raise ValueError(f"buffer size must be >= 0, not {size}")
    return memoryview(mmap.mmap(-1, max(size, 1)))[:size]
