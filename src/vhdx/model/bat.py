"""BAT model: pure, vectorised checks and queries over the numpy BAT array.

References: MS-VHDX 2.5; VHDX-FORMAT.md 8.2, 8.3, 8.7.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ..constants import (
    BAT_ENTRY_SIZE,
    HEADER_SECTION_SIZE,
    SECTOR_BITMAP_BLOCK_SIZE,
    PayloadBlockState,
    SectorBitmapState,
)
from ..errors import CorruptStructureError, TruncatedError
from ..structs import bat as bat_struct
from .geometry import DiskGeometry

# Payload states a reader accepts (4 is reserved and corrupt; 5 is the draft's UNMAPPED).
_VALID_PAYLOAD_STATES = np.array(
    [s in (0, 1, 2, 3, 5, 6, 7) for s in range(8)], dtype=bool)
_INVALID_PAYLOAD_STATES = tuple(int(s) for s in np.flatnonzero(~_VALID_PAYLOAD_STATES))
PRESENT_STATES = (PayloadBlockState.FULLY_PRESENT, PayloadBlockState.PARTIALLY_PRESENT)


@dataclass(frozen=True, slots=True)
class BatView:
    """The payload and sector bitmap entries of a BAT, split out."""

    payload_states: npt.NDArray[np.uint8]  # one per payload block, virtual order
    payload_entries: npt.NDArray[np.uint64]  # the raw payload entries, virtual order
    bitmap_states: npt.NDArray[np.uint8]  # one per chunk (NOT_PRESENT past the region's end)
    bitmap_offsets: npt.NDArray[np.uint64]

    @property
    def payload_offsets(self) -> npt.NDArray[np.uint64]:
        """Byte offsets of every payload block (computed on each access: a 64 TiB disk has
        millions of blocks, and keeping this next to the entries would double their memory)."""
        return bat_struct.file_offsets(self.payload_entries)


def payload_entries(entries: npt.NDArray[np.uint64], geometry: DiskGeometry) -> npt.NDArray[np.uint64]:
    """The payload entries of ``entries`` in virtual order (a contiguous copy).

    The interleave is uniform (8.4): each chunk is ``chunk_ratio`` payload entries then one
    sector bitmap entry. Viewing the whole chunks as a 2-D array and dropping the last column is a
    strided copy, several times faster than gathering through an index array (it matters for a
    64 TiB disk, whose BAT has millions of entries); the last chunk, which may be incomplete and
    may lack its bitmap entry, is copied on its own.
    """
    pb = geometry.payload_block_count
    out = np.empty(pb, dtype=np.uint64)
    if pb == 0:
        return out
    cr = geometry.chunk_ratio
    whole = (pb - 1) // cr  # chunks before the last one
    head = whole * cr
    src_head = whole * (cr + 1)
    tail = pb - head
    if len(entries) < src_head + tail:
        raise IndexError(f"the BAT holds {len(entries)} entries; {src_head + tail} are needed")
    out[:head].reshape(whole, cr)[:] = entries[:src_head].reshape(whole, cr + 1)[:, :cr]
    out[head:] = entries[src_head : src_head + tail]
    return out


def split(entries: npt.NDArray[np.uint64], geometry: DiskGeometry) -> BatView:
    """Separate payload entries from sector bitmap entries using the uniform interleave (8.4)."""
    payload = payload_entries(entries, geometry)
    bidx = geometry.bitmap_bat_indices()
    bitmap = np.zeros(len(bidx), dtype=np.uint64)
    inside = bidx < len(entries)
    bitmap[inside] = entries[bidx[inside]]
    return BatView(bat_struct.states(payload), payload, bat_struct.states(bitmap), bat_struct.file_offsets(bitmap))


def validate(
    view: BatView,
    geometry: DiskGeometry,
    *,
    differencing: bool,
    file_size: int,
    reserved: list[tuple[int, int, str]],
    bat_offset: int,
) -> list[str]:
    """Check every entry (8.2, 8.7); return warnings for tolerated oddities.

    ``reserved`` lists (start, end, name) ranges that blocks must not overlap: the header section,
    the log and every region. Raises on the first corruption found.

    Raises:
        CorruptStructureError: invalid state, offset zero or inside the header section, overlaps.
        TruncatedError: a block starts at or past the end of the file.
    """
    warnings: list[str] = []
    ps = view.payload_states

    def where(block: int) -> int:
        return bat_offset + geometry.payload_bat_index(block) * BAT_ENTRY_SIZE

    # The highest state found bounds what each full pass below could find: one cheap reduction
    # lets an empty or all-zero BAT of millions of entries skip them (the 64 TiB open).
    top = int(ps.max()) if ps.size else -1
    none = np.zeros(0, dtype=np.intp)
    # One comparison per invalid state: a table lookup over millions of entries costs far more.
    invalid_states = [state for state in _INVALID_PAYLOAD_STATES if state <= top]
    if invalid_states:
        invalid = ps == invalid_states[0]
        for state in invalid_states[1:]:
            invalid |= ps == state
        bad = np.flatnonzero(invalid)
        if bad.size:
            b = int(bad[0])
            raise CorruptStructureError(f"payload block {b} has reserved state {int(ps[b])}", structure="BAT",
                                        offset=where(b))
    if not differencing and PayloadBlockState.PARTIALLY_PRESENT <= top:
        partial = np.flatnonzero(ps == PayloadBlockState.PARTIALLY_PRESENT)
        if partial.size:
            b = int(partial[0])
            raise CorruptStructureError(f"payload block {b} is PARTIALLY_PRESENT in a disk without a parent",
                                        structure="BAT", offset=where(b))
    bs = view.bitmap_states
    bad_sb = np.flatnonzero((bs != SectorBitmapState.NOT_PRESENT) & (bs != SectorBitmapState.PRESENT))
    if bad_sb.size:
        k = int(bad_sb[0])
        raise CorruptStructureError(f"sector bitmap entry {k} has reserved state {int(bs[k])}", structure="BAT",
                                    offset=bat_offset + geometry.bitmap_bat_index(k) * BAT_ENTRY_SIZE)
    if not differencing and np.any(bs == SectorBitmapState.PRESENT):
        warnings.append("sector bitmap blocks are marked present in a disk without a parent (ignored)")

    present = (np.flatnonzero((ps == PayloadBlockState.FULLY_PRESENT) | (ps == PayloadBlockState.PARTIALLY_PRESENT))
               if min(PRESENT_STATES) <= top else none)
    starts = bat_struct.file_offsets(view.payload_entries[present]).astype(np.int64)
    lengths = np.full(present.size, geometry.block_size, dtype=np.int64)
    kinds = present.astype(np.int64)
    if differencing:
        sb_present = np.flatnonzero(bs == SectorBitmapState.PRESENT)
        starts = np.concatenate([starts, view.bitmap_offsets[sb_present].astype(np.int64)])
        lengths = np.concatenate([lengths, np.full(sb_present.size, SECTOR_BITMAP_BLOCK_SIZE, dtype=np.int64)])
        kinds = np.concatenate([kinds, -1 - sb_present.astype(np.int64)])
        # Each partially present block needs its chunk's bitmap.
        partial = np.flatnonzero(ps == PayloadBlockState.PARTIALLY_PRESENT) if PayloadBlockState.PARTIALLY_PRESENT <= top else none
        chunks = partial // geometry.chunk_ratio
        missing = np.flatnonzero(bs[chunks] != SectorBitmapState.PRESENT)
        if missing.size:
            b = int(partial[missing[0]])
            raise CorruptStructureError(f"payload block {b} is PARTIALLY_PRESENT but its sector bitmap block is not present",
                                        structure="BAT", offset=where(b))

    def describe(kind: int) -> tuple[str, int]:
        if kind >= 0:
            return f"payload block {kind}", where(kind)
        k = -1 - kind
        return f"sector bitmap block {k}", bat_offset + geometry.bitmap_bat_index(k) * BAT_ENTRY_SIZE

    low = np.flatnonzero(starts < HEADER_SECTION_SIZE)
    if low.size:
        name, off = describe(int(kinds[low[0]]))
        raise CorruptStructureError(f"{name} is present at file offset 0x{int(starts[low[0]]):x}, inside the header section",
                                    structure="BAT", offset=off)
    past = np.flatnonzero(starts >= file_size)
    if past.size:
        name, off = describe(int(kinds[past[0]]))
        raise TruncatedError(f"{name} lies at 0x{int(starts[past[0]]):x}, past the end of the file (0x{file_size:x})",
                             structure="BAT", offset=off)
    tail = np.flatnonzero(starts + lengths > file_size)
    if tail.size:
        # QEMU's own fixed images end with a partial last block (VHDX-FORMAT.md 8.7): read the
        # missing tail as zeros.
        name, _ = describe(int(kinds[tail[0]]))
        warnings.append(f"{name} extends past the end of the file; the missing part reads as zeros")

    # Overlaps: blocks with blocks, and blocks with the header section, log and regions.
    r_starts = np.array([r[0] for r in reserved], dtype=np.int64)
    r_ends = np.array([r[1] for r in reserved], dtype=np.int64)
    all_starts = np.concatenate([starts, r_starts])
    all_ends = np.concatenate([starts + lengths, r_ends])
    all_kinds = np.concatenate([kinds, np.full(len(reserved), np.iinfo(np.int64).min, dtype=np.int64)])
    order = np.argsort(all_starts, kind="stable")
    s_sorted, e_sorted = all_starts[order], all_ends[order]
    running_end = np.maximum.accumulate(e_sorted)
    clash = np.flatnonzero(s_sorted[1:] < running_end[:-1])
    if clash.size:
        i = int(clash[0]) + 1
        j = int(np.flatnonzero(e_sorted[:i] > s_sorted[i])[-1])
        names = []
        offset = bat_offset
        for idx in (order[j], order[i]):
            kind = int(all_kinds[idx])
            if kind == np.iinfo(np.int64).min:
                names.append(reserved[int(idx) - len(starts)][2])
            else:
                n, offset = describe(kind)
                names.append(n)
        raise CorruptStructureError(f"{names[0]} and {names[1]} overlap in the file", structure="BAT", offset=offset)
    return warnings
