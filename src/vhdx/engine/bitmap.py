"""Sector bitmaps of a differencing disk: loaded lazily per block, cached, turned into runs.

References: MS-VHDX 2.4.2 (sector bitmap blocks); VHDX-FORMAT.md 9.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ..constants import BAT_FILE_OFFSET_MASK, BAT_STATE_MASK, SectorBitmapState
from ..model.geometry import DiskGeometry

# Unpacked per-block bitmaps kept in memory (each is sectors_per_block bytes: 4 KiB for the
# common 2 MiB / 512 B case), so repeated reads of one block do not re-read its bitmap.
CACHE_BLOCKS = 4096


class SectorBitmaps:
    """Read access to the sector bitmap bits of payload blocks."""

    def __init__(
        self,
        read_into: Callable[[int, memoryview], int],
        geometry: DiskGeometry,
        bitmap_entry: Callable[[int], int],
    ) -> None:
        """``read_into(file_offset, view)`` reads the file; ``bitmap_entry(chunk)`` returns the
        chunk's current sector bitmap BAT entry (0 when the BAT does not reach it)."""
        self._read_into = read_into
        self._geometry = geometry
        self._bitmap_entry = bitmap_entry
        self._cache: OrderedDict[int, npt.NDArray[np.uint8]] = OrderedDict()

    def block_bits(self, block_index: int) -> npt.NDArray[np.uint8]:
        """One uint8 (0 or 1) per logical sector of ``block_index``: 1 = data in this file."""
        bits = self._cache.get(block_index)
        if bits is not None:
            self._cache.move_to_end(block_index)
            return bits
        g = self._geometry
        chunk = g.chunk_of_block(block_index)
        spb = g.sectors_per_block
        entry = self._bitmap_entry(chunk)
        if entry & BAT_STATE_MASK != SectorBitmapState.PRESENT:
            bits = np.zeros(spb, dtype=np.uint8)
        else:
            lo, hi = g.bitmap_byte_range(block_index)
            raw = bytearray(hi - lo)
            got = self._read_into((entry & BAT_FILE_OFFSET_MASK) + lo, memoryview(raw))
            if got < len(raw):
                raw[got:] = bytes(len(raw) - got)
            bits = np.unpackbits(np.frombuffer(bytes(raw), dtype=np.uint8), bitorder="little")
        self._cache[block_index] = bits
        if len(self._cache) > CACHE_BLOCKS:
            self._cache.popitem(last=False)
        return bits

    def blocks_with_data(self, blocks: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
        """For each of ``blocks``, whether any of its sectors is present in this file. One read
        per chunk's bitmap block (not one per payload block), for scans over whole BATs."""
        g = self._geometry
        out = np.zeros(len(blocks), dtype=bool)
        if not len(blocks):
            return out
        ratio = g.chunk_ratio
        per_block = g.sectors_per_block // 8
        blocks = np.asarray(blocks, dtype=np.int64)
        chunks = blocks // ratio
        order = np.argsort(chunks, kind="stable")
        unique, first = np.unique(chunks[order], return_index=True)
        bounds = np.append(first, len(order))
        raw = bytearray(ratio * per_block)
        for k, chunk in enumerate(unique.tolist()):
            entry = self._bitmap_entry(chunk)
            if entry & BAT_STATE_MASK != SectorBitmapState.PRESENT:
                continue  # no bitmap block: no sector of the chunk is present
            got = self._read_into((entry & BAT_FILE_OFFSET_MASK) + g.bitmap_byte_range(chunk * ratio)[0],
                                  memoryview(raw))
            if got < len(raw):
                raw[got:] = bytes(len(raw) - got)
            has = np.frombuffer(bytes(raw), dtype=np.uint8).reshape(ratio, per_block).any(axis=1)
            where = order[bounds[k] : bounds[k + 1]]
            out[where] = has[blocks[where] - chunk * ratio]
        return out

    def runs(self, block_index: int, first_sector: int, end_sector: int) -> list[tuple[int, int, bool]]:
        """Split sectors [first_sector, end_sector) of a block into (start, end, present) runs."""
        bits = self.block_bits(block_index)[first_sector:end_sector]
        if bits.size == 0:
            return []
        edges = np.flatnonzero(np.diff(bits)) + 1
        starts = np.concatenate(([0], edges)) + first_sector
        ends = np.concatenate((edges, [bits.size])) + first_sector
        values = bits[np.concatenate(([0], edges))]
        return [(int(s), int(e), bool(v)) for s, e, v in zip(starts.tolist(), ends.tolist(), values.tolist())]

    def invalidate(self, block_index: int | None = None) -> None:
        if block_index is None:
            self._cache.clear()
        else:
            self._cache.pop(block_index, None)
