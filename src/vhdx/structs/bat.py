"""The BAT entry bit layout (MS-VHDX 2.5.1), as numpy helpers over uint64 arrays.

Bits 0-2 are the state; bits 20-63 are FileOffsetMB, so ``entry & BAT_FILE_OFFSET_MASK`` is the
byte offset. No per-entry construct: the BAT is parsed and built in bulk.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..constants import BAT_FILE_OFFSET_MASK, BAT_STATE_MASK

BAT_DTYPE = np.dtype("<u8")


def parse(data: bytes | bytearray | memoryview) -> npt.NDArray[np.uint64]:
    """Return the BAT entries in ``data`` as a native uint64 array (a copy)."""
    return np.frombuffer(data, dtype=BAT_DTYPE).astype(np.uint64)


def build(entries: npt.NDArray[np.uint64]) -> bytes:
    """Return the on-disk bytes of ``entries``."""
    return entries.astype(BAT_DTYPE).tobytes()


def states(entries: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint8]:
    """Return the state field of every entry."""
    # Narrow first (a cast keeps the low byte, which holds the state bits), then mask: one
    # 8-byte-wide temporary fewer, which is most of the cost on a multi-million-entry BAT.
    out = entries.astype(np.uint8)
    out &= BAT_STATE_MASK
    return out


def file_offsets(entries: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Return the byte file offset (FileOffsetMB << 20) of every entry."""
    return entries & np.uint64(BAT_FILE_OFFSET_MASK)


def make_entry(state: int, file_offset: int) -> int:
    """Return one entry value for ``state`` at byte ``file_offset`` (a multiple of 1 MiB)."""
    return (file_offset & BAT_FILE_OFFSET_MASK) | (state & BAT_STATE_MASK)
