"""BlockEngine: turns virtual byte ranges into reads of the file, zeros and parent reads.

The hot path (``read_into``) looks each payload block up once in the numpy BAT, coalesces runs
of FULLY_PRESENT blocks that are contiguous in the file into one ``preadv`` straight into the
caller's buffer, fills holes with zeros and hands NOT_PRESENT ranges of a differencing disk to
the parent by virtual offset (never by block index: parent and child block sizes may differ).

References: MS-VHDX 2.5.1; VHDX-FORMAT.md 8.3, 9.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..constants import ALIGNED_BUFFER_MIN, BAT_FILE_OFFSET_MASK, BAT_STATE_MASK, EXTENT_WINDOW_BLOCKS, KiB, PayloadBlockState
from ..errors import ParentNotFoundError
from .bitmap import SectorBitmaps
from .buffers import io_buffer
from .image import Image
from .mapping import CLASS_DATA, CLASS_PARENT, CLASS_PARTIAL, DATA, STATE_CLASS, UNALLOCATED, ZERO, Extent
from .source import FileSource

_SMALL_ZERO_FILL = 64 * KiB  # zero_fill copies up to this much from _ZEROS, and fills above it
_ZEROS = memoryview(bytes(_SMALL_ZERO_FILL))
_FULL = int(PayloadBlockState.FULLY_PRESENT)
_PARTIAL = int(PayloadBlockState.PARTIALLY_PRESENT)
_NOT_PRESENT = int(PayloadBlockState.NOT_PRESENT)


def zero_fill(view: memoryview) -> None:
    """Set every byte of ``view`` to zero without allocating per call."""
    n = len(view)
    if n <= _SMALL_ZERO_FILL:
        view[:] = _ZEROS[:n]  # cheapest for small ranges: no array object to set up
    else:
        # A memset-like fill writes each byte once; copying from a zero buffer also reads one,
        # which makes the holes of a sparse disk read about a third slower.
        np.frombuffer(view, dtype=np.uint8).fill(0)


class BlockEngine:
    """Read access to the virtual disk of one file (and, through ``parent``, its chain)."""

    def __init__(self, image: Image, parent: BlockEngine | None = None, *, parent_missing: str | None = None,
                 owns_parent: bool = True) -> None:
        self.image = image
        self.parent = parent
        self.owns_parent = owns_parent
        self.parent_missing = parent_missing  # why the parent is absent, for a differencing disk opened without it
        g = image.geometry
        self.geometry = g
        self.size = g.virtual_size
        self.block_size = g.block_size
        self._shift = g.block_shift
        self._mask = g.block_size - 1
        self.differencing = image.metadata.has_parent
        # The payload entries decoded at load, shared rather than copied (a 64 TiB disk has
        # millions); writes update this array in place.
        self.payload = image.view.payload_entries
        self._source_readinto = image.source.readinto
        self.bitmaps = SectorBitmaps(image.source.readinto, g, self.bitmap_entry) if self.differencing else None
        self.sector_size = g.logical_sector_size

    def bitmap_entry(self, chunk: int) -> int:
        """The current sector bitmap BAT entry of ``chunk`` (0 when the BAT does not reach it)."""
        index = self.geometry.bitmap_bat_index(chunk)
        return int(self.image.bat[index]) if index < len(self.image.bat) else 0

    # --- reads -----------------------------------------------------------------------------------
    def read_into(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with virtual bytes from ``offset`` (the range must lie within the disk)."""
        length = len(view)
        end = offset + length
        shift = self._shift
        payload = self.payload
        block = offset >> shift
        if (end - 1) >> shift == block:
            # Fast path (small random reads): inside one FULLY_PRESENT block, read the whole view
            # with no run search and no slicing.
            entry = payload.item(block)
            if entry & BAT_STATE_MASK == _FULL:
                got = self._source_readinto((entry & BAT_FILE_OFFSET_MASK) + (offset & self._mask), view)
                if got < length:  # a partial last block at the end of the file reads as zeros
                    zero_fill(view[got:])
                return
        pos = offset
        mask, bs = self._mask, self.block_size
        while pos < end:
            block = pos >> shift
            entry = payload.item(block)  # a Python int without a numpy scalar in between
            state = entry & BAT_STATE_MASK
            start = pos - offset
            if state == _FULL:
                # Extend over following blocks that are FULLY_PRESENT and next in the file.
                run_end = min(end, (block + 1) << shift)
                nxt = block + 1
                expect = entry + bs
                while run_end < end and payload.item(nxt) == expect:
                    run_end = min(end, (nxt + 1) << shift)
                    nxt += 1
                    expect += bs
                n = run_end - pos
                sub = view[start : start + n]
                got = self._source_readinto((entry & BAT_FILE_OFFSET_MASK) + (pos & mask), sub)
                if got < n:  # a partial last block at the end of the file reads as zeros
                    zero_fill(sub[got:])
                pos = run_end
                continue
            n = min(end, (block + 1) << shift) - pos
            sub = view[start : start + n]
            if state == _PARTIAL and self.differencing:
                self._read_partial(block, entry & BAT_FILE_OFFSET_MASK, pos, sub)
            elif state == _NOT_PRESENT and self.differencing:
                self._read_parent(pos, sub)
            else:
                zero_fill(sub)
            pos += n

    def read_bytes(self, offset: int, length: int) -> bytes:
        """Return ``length`` virtual bytes from ``offset`` (the range must lie within the disk).

        When the whole range is one run of FULLY_PRESENT blocks contiguous in a plain file, a
        single ``FileSource.pread`` returns the bytes object itself: no buffer to allocate, zero and copy
        again (the common case of small random reads). Anything else goes through ``read_into``.
        """
        source = self.image.source
        if type(source) is FileSource and length > 0:
            shift = self._shift
            block = offset >> shift
            entry = self.payload.item(block)
            if entry & BAT_STATE_MASK == _FULL:
                last = (offset + length - 1) >> shift
                contiguous = True
                if last != block:  # several blocks qualify only if they follow each other in the file
                    payload, bs = self.payload, self.block_size
                    expect = entry
                    for nxt in range(block + 1, last + 1):
                        expect += bs
                        if payload.item(nxt) != expect:
                            contiguous = False
                            break
                if contiguous:
                    data = source.pread((entry & BAT_FILE_OFFSET_MASK) + (offset & self._mask), length)
                    if len(data) == length:
                        return data
                    # Short: the end of the file (or a huge request); the general path handles it.
        # A large bytearray starts 16 bytes past a page boundary, where the kernel's copy can run
        # several times slower (engine/buffers.py); an aligned buffer and one more copy win.
        view = io_buffer(length) if length >= ALIGNED_BUFFER_MIN else memoryview(bytearray(length))
        self.read_into(offset, view)
        return bytes(view)

    def _read_parent(self, pos: int, view: memoryview) -> None:
        parent = self.parent
        if parent is None:
            raise ParentNotFoundError(
                f"data at virtual offset 0x{pos:x} lives in the parent, which is not open ({self.parent_missing})",
                image=self.image.name)
        n = len(view)
        inside = max(0, min(n, parent.size - pos))
        if inside:
            parent.read_into(pos, view[:inside])
        if inside < n:
            zero_fill(view[inside:])

    def _read_partial(self, block: int, file_offset: int, pos: int, view: memoryview) -> None:
        """Read a PARTIALLY_PRESENT block sector by sector run, through its sector bitmap."""
        assert self.bitmaps is not None
        ss = self.sector_size
        block_start = block << self._shift
        first = (pos - block_start) // ss
        last = (pos - block_start + len(view) + ss - 1) // ss
        for s, e, present in self.bitmaps.runs(block, first, last):
            lo = max(pos, block_start + s * ss)
            hi = min(pos + len(view), block_start + e * ss)
            sub = view[lo - pos : hi - pos]
            if present:
                got = self._source_readinto(file_offset + (lo - block_start), sub)
                if got < len(sub):
                    zero_fill(sub[got:])
            else:
                self._read_parent(lo, sub)

    # --- allocation map ------------------------------------------------------------------------------
    def extents(self, offset: int = 0, length: int | None = None, depth: int = 0) -> Iterator[Extent]:
        """Yield unmerged extents covering [offset, offset + length) of the virtual disk."""
        end = self.size if length is None else min(self.size, offset + length)
        if offset >= end:
            return
        shift, bs = self._shift, self.block_size
        b0, b1 = offset >> shift, ((end - 1) >> shift) + 1
        if b1 - b0 > EXTENT_WINDOW_BLOCKS:
            # Work through a huge BAT a window at a time, so the temporary arrays stay small
            # (merge() joins runs across window edges).
            for w0 in range(b0, b1, EXTENT_WINDOW_BLOCKS):
                lo = max(offset, w0 << shift)
                hi = min(end, (w0 + EXTENT_WINDOW_BLOCKS) << shift)
                yield from self.extents(lo, hi - lo, depth)
            return
        entries = self.payload[b0:b1]
        states = (entries & np.uint64(BAT_STATE_MASK)).astype(np.uint8)
        classes = STATE_CLASS[states]
        if not self.differencing:
            classes = np.where(classes == CLASS_PARTIAL, CLASS_PARENT, classes)  # rejected at open; defensive
        offsets = (entries & np.uint64(BAT_FILE_OFFSET_MASK)).astype(np.int64)
        # A run breaks where the class changes, where data stops being contiguous in the file, and
        # around every partially present block (each is split by its bitmap).
        brk = np.ones(len(classes), dtype=bool)
        if len(classes) > 1:
            same = classes[1:] == classes[:-1]
            contiguous = (classes[1:] != CLASS_DATA) | (offsets[1:] == offsets[:-1] + bs)
            brk[1:] = ~(same & contiguous & (classes[1:] != CLASS_PARTIAL))
        starts = np.flatnonzero(brk)
        stops = np.append(starts[1:], len(classes))
        for i, j in zip(starts.tolist(), stops.tolist()):
            cls = int(classes[i])
            vstart = max(offset, (b0 + i) << shift)
            vend = min(end, (b0 + j) << shift)
            if cls == CLASS_DATA:
                yield Extent(vstart, vend - vstart, DATA, int(offsets[i]) + (vstart - ((b0 + i) << shift)), depth)
            elif cls == CLASS_PARENT:
                yield from self._parent_extents(vstart, vend, depth)
            elif cls == CLASS_PARTIAL:
                yield from self._partial_extents(b0 + i, int(offsets[i]), vstart, vend, depth)
            else:
                yield Extent(vstart, vend - vstart, ZERO, None, depth)

    def _parent_extents(self, start: int, end: int, depth: int) -> Iterator[Extent]:
        if not self.differencing or self.parent is None:
            yield Extent(start, end - start, UNALLOCATED, None, depth)
            return
        inside_end = min(end, self.parent.size)
        if start < inside_end:
            yield from self.parent.extents(start, inside_end - start, depth + 1)
        if inside_end < end:
            yield Extent(max(start, inside_end), end - max(start, inside_end), UNALLOCATED, None, depth + 1)

    def _partial_extents(self, block: int, file_offset: int, start: int, end: int, depth: int) -> Iterator[Extent]:
        assert self.bitmaps is not None
        ss = self.sector_size
        block_start = block << self._shift
        first = (start - block_start) // ss
        last = (end - block_start + ss - 1) // ss
        for s, e, present in self.bitmaps.runs(block, first, last):
            lo = max(start, block_start + s * ss)
            hi = min(end, block_start + e * ss)
            if present:
                yield Extent(lo, hi - lo, DATA, file_offset + (lo - block_start), depth)
            else:
                yield from self._parent_extents(lo, hi, depth)

    # --- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self.parent is not None and self.owns_parent:
            self.parent.close()
        self.image.source.close()
