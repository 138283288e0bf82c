"""compact(): give back the space of an image's blocks that hold nothing, in place.

Three steps, each crash-safe on its own (MS-VHDX 2.2.2.1, 2.3, 2.5; VHDX-FORMAT.md 1.2, 5.4, 8.2,
10.6, 12):

1. **Release.** Blocks that keep file space without needing it lose it:

   * FULLY_PRESENT blocks whose bytes are all zero (found by reading them; skipped with
     ``scan_zeros=False``) become NOT_PRESENT in a dynamic disk (reads zero, 8.3) and ZERO in a
     differencing disk (zeros that still hide the parent; NOT_PRESENT would let the parent show).
   * ZERO, UNMAPPED and UNDEFINED blocks that still carry a FileOffsetMB keep their state with the
     offset cleared (8.2: the field is reserved for ZERO, and optional for UNMAPPED/UNDEFINED; the
     draft's UNMAPPED value 5 is written as the current 3).
   * PARTIALLY_PRESENT blocks whose sector bitmap has no bit set read entirely from the parent:
     they become NOT_PRESENT. Other partially present blocks are left alone (their zero sectors
     hide parent sectors, which only storage can express).
   * Sector bitmap blocks of chunks without a PARTIALLY_PRESENT block are not consulted by any
     read (8.3, 9): they become SB_BLOCK_NOT_PRESENT (offset 0). Sector bitmap entries marked
     present in a disk without a parent (not allowed, 8.2) are cleared the same way.

   None of this changes what a reader sees, so the DataWriteGuid stays (5.4: "changes that only
   move blocks, compact or defragment" keep it) and children of a compacted parent stay linked.
   The BAT changes go through the log in one commit.

2. **Move.** Free space is the file minus the header section, the log, every region (unknown ones
   too, 6.3) and every block the BAT references, all measured on the committed BAT of step 1. The
   highest blocks (payload and sector bitmap alike) are copied into the lowest free holes that fit
   them, below where they are (1.2: objects may be moved, 1 MiB-aligned and without overlap).
   Per batch: the copies land in space nothing durable references, the file is synced, then the
   BAT entries are switched through the log (``WritableEngine.flush``; 10.6, 12 step 3.3). The
   space a block leaves is never a target in this run: targets are carved only from the holes that
   existed before the first move, so every copy overwrites space that no committed BAT entry (old
   or new) references. A crash at any point leaves every block readable at its old place or its
   new one, both holding the same bytes.

3. **Truncate.** The file is cut after the last structure (``WritableEngine.truncate_file``
   empties the log first, 10.6 step 6).

Fixed disks are refused (LeaveBlockAllocated: blocks SHOULD NOT become NOT_PRESENT and the file
MUST NOT shrink below what all blocks need, 7.4, 12 step 5) unless ``convert_fixed=True``, which
writes a dynamic copy with ``convert`` and puts it in the image's place atomically.

References: MS-VHDX 2.1, 2.2.2, 2.5.1, 2.6.2.1; VHDX-FORMAT.md 1.2, 5.4, 7.4, 8.2-8.3, 9, 10.6, 12.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from .. import newfile
from ..constants import (
    BAT_FILE_OFFSET_MASK,
    BAT_STATE_MASK,
    HEADER_SECTION_SIZE,
    OBJECT_ALIGNMENT,
    SECTOR_BITMAP_BLOCK_SIZE,
    KiB,
    MiB,
    PayloadBlockState,
    SectorBitmapState,
)
from ..disk import open_engine
from ..engine.buffers import io_buffer
from ..engine.writer import WritableEngine
from ..errors import ReadOnlyError, UnsupportedError
from ..structs.bat import make_entry
from .progress import ProgressCallback, ProgressReporter
from .result import OperationResult

OPERATION = "compact"
# The zero scan first reads this much of a block: data is usually found in it, and the rest of
# the block is then never read (a block of random data costs one small read, not a whole block).
SCAN_PROBE = 64 * KiB
# Reads of the zero scan and copies of the moves go through one reused buffer of this size.
IO_CHUNK = 8 * MiB
# Moves are committed (synced, then the BAT switched through the log) after this many bytes:
# a crash loses at most this much copying work, and each commit costs a few syncs.
MOVE_BATCH = 1024 * MiB

_FULL = int(PayloadBlockState.FULLY_PRESENT)
_PARTIAL = int(PayloadBlockState.PARTIALLY_PRESENT)
_NOT_PRESENT = int(PayloadBlockState.NOT_PRESENT)
_ZERO = int(PayloadBlockState.ZERO)
_UNMAPPED = int(PayloadBlockState.UNMAPPED)
# States that read as zeros (or from the parent) without storage; their offset can go (8.2).
_STORAGELESS = (int(PayloadBlockState.UNDEFINED), _ZERO, _UNMAPPED, int(PayloadBlockState.UNMAPPED_V095))
_SB_PRESENT = int(SectorBitmapState.PRESENT)


@dataclass(frozen=True)
class CompactResult(OperationResult):
    """What ``compact`` did.

    Attributes:
        image: the image compacted (as given; a file object's name).
        disk_type: ``"dynamic"`` or ``"differencing"`` (``"fixed"`` only when converted).
        converted: a fixed image was converted to dynamic (``convert_fixed=True``).
        bytes_read: bytes read by the zero scan and the moves.
        bytes_written: bytes copied to move blocks (the log and BAT writes not counted).
        blocks_freed: payload blocks that gave up their file space.
        blocks_moved: payload blocks moved down in the file.
        sector_bitmap_blocks_freed, sector_bitmap_blocks_moved: the same for sector bitmap blocks.
        file_size_before, file_size_after: length of the file.
        bytes_reclaimed: ``file_size_before - file_size_after``.
        seconds: wall time.
    """

    image: str
    disk_type: str
    converted: bool
    bytes_read: int
    bytes_written: int
    blocks_freed: int
    blocks_moved: int
    sector_bitmap_blocks_freed: int
    sector_bitmap_blocks_moved: int
    file_size_before: int
    file_size_after: int
    bytes_reclaimed: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Move:
    """One object to copy: ``length`` bytes from ``source`` to ``target``. ``index`` is the payload
    block (``bitmap`` False) or the chunk whose sector bitmap block it is (``bitmap`` True)."""

    index: int
    bitmap: bool
    source: int
    target: int
    length: int


def compact(
    image: str | os.PathLike[str] | BinaryIO,
    *,
    progress: ProgressCallback | None = None,
    scan_zeros: bool = True,
    convert_fixed: bool = False,
    parent_search: Sequence[str | os.PathLike[str]] = (),
    parent: str | os.PathLike[str] | None = None,
    ignore_id_mismatch: bool = False,
) -> CompactResult:
    """Release the space of blocks that read as zero, move the remaining blocks down into the
    holes and truncate the file, in place and crash-safe; what the disk reads does not change.

    Args:
        image: a dynamic or differencing VHDX, as a path or a read-write binary file object (left
            open).
        progress: called as the work advances: first the zero scan (``done``/``total`` in bytes of
            present blocks), then the moves (bytes to copy).
        scan_zeros: read FULLY_PRESENT blocks to find the all-zero ones (the slow part); with
            False only blocks already trimmed or zeroed give their space back.
        convert_fixed: compact a fixed image by converting it to a dynamic one (a new file, put
            in place of ``image`` atomically; a path only). Without it a fixed image is refused.
        parent_search, parent, ignore_id_mismatch: how to find the parent of a differencing image
            (as for ``vhdx.open``; the parent is only read).

    Returns:
        A ``CompactResult``.

    Raises:
        UnsupportedError: a fixed image without ``convert_fixed``.
        ReadOnlyError: ``image`` is a file object open for reading only.
        VhdxError: the image cannot be opened for writing (damaged, locked by another writer, its
            parent missing or mismatched).
        OSError: from the operating system (a read-only file, for example).
    """
    started = time.perf_counter()
    name = _label(image)
    if not isinstance(image, (str, os.PathLike)) and not _writable_fileobj(image):
        raise ReadOnlyError(f"{name}: the file object is open for reading only; compaction rewrites the image")
    engine = open_engine(image, writable=True, parent_search=parent_search, parent=parent,
                         ignore_id_mismatch=ignore_id_mismatch)
    assert isinstance(engine, WritableEngine)
    try:
        if engine.fixed:
            if not convert_fixed:
                raise UnsupportedError(
                    "fixed images keep every block allocated (LeaveBlockAllocated) and cannot be compacted in place; "
                    "convert it to a dynamic image first (vhdx convert --type dynamic IMAGE NEW.vhdx), or pass "
                    "--convert to do that in place of IMAGE", image=name)
            if not isinstance(image, (str, os.PathLike)):
                raise ValueError("a fixed image can only be converted when given as a path")
            return _convert_fixed(engine, image, name, started, progress)
        return _Compactor(engine, name, progress).run(scan_zeros, started)
    finally:
        engine.close()


class _Compactor:
    def __init__(self, engine: WritableEngine, name: str, progress: ProgressCallback | None) -> None:
        self.engine = engine
        self.name = name
        self.reporter = ProgressReporter(progress, OPERATION, None)
        self.bytes_read = 0
        self.bytes_written = 0
        self._buffer = io_buffer(IO_CHUNK)
        self._kernel_copy = hasattr(os, "copy_file_range")

    def run(self, scan_zeros: bool, started: float) -> CompactResult:
        engine = self.engine
        size_before = engine.source.size()
        freed, bitmaps_freed = self.release(scan_zeros)
        moves, new_end = self.plan()
        self.move(moves)
        blocks_moved = sum(not m.bitmap for m in moves)
        if new_end < engine.source.size():
            # The file shrinks: a session starts first if nothing else started one (the headers
            # get a new FileWriteGuid before any byte changes, 5.4).
            engine.journal.begin(visible=False)
            engine.truncate_file(new_end)
        size_after = engine.source.size()
        return CompactResult(
            image=self.name,
            disk_type=engine.image.disk_type,
            converted=False,
            bytes_read=self.bytes_read,
            bytes_written=self.bytes_written,
            blocks_freed=freed,
            blocks_moved=blocks_moved,
            sector_bitmap_blocks_freed=bitmaps_freed,
            sector_bitmap_blocks_moved=len(moves) - blocks_moved,
            file_size_before=size_before,
            file_size_after=size_after,
            bytes_reclaimed=size_before - size_after,
            seconds=time.perf_counter() - started,
        )

    # --- step 1: release ---------------------------------------------------------------------------
    def release(self, scan_zeros: bool) -> tuple[int, int]:
        """Give up the space of blocks that do not need it; commit through the log. Returns the
        payload and sector bitmap blocks freed."""
        engine = self.engine
        g = engine.geometry
        payload = engine.payload
        states = (payload & np.uint64(BAT_STATE_MASK)).astype(np.uint8)
        offsets = payload & np.uint64(BAT_FILE_OFFSET_MASK)
        changes: dict[int, int] = {}

        # Storage kept by blocks that read without it: keep the state, drop the offset (8.2).
        for block in np.flatnonzero(np.isin(states, _STORAGELESS) & (offsets != 0)).tolist():
            state = int(states[block])
            changes[block] = make_entry(_UNMAPPED if state == PayloadBlockState.UNMAPPED_V095 else state, 0)

        if engine.differencing:
            assert engine.bitmaps is not None
            partial = np.flatnonzero(states == _PARTIAL)
            for block in partial[~engine.bitmaps.blocks_with_data(partial)].tolist():
                changes[block] = make_entry(_NOT_PRESENT, 0)  # every sector comes from the parent

        if scan_zeros:
            released = _ZERO if engine.differencing else _NOT_PRESENT
            for block in self.zero_blocks(np.flatnonzero(states == _FULL), offsets):
                changes[block] = make_entry(released, 0)

        bitmap_changes = self.unused_bitmaps(states, changes)
        if not changes and not bitmap_changes:
            return 0, 0
        engine.journal.begin(visible=False)  # nothing a reader sees changes (5.4)
        for block, value in changes.items():
            engine._set_payload_entry(block, value)
        for chunk in bitmap_changes:
            engine._set_bat(g.bitmap_bat_index(chunk), 0)
        if bitmap_changes and engine.bitmaps is not None:
            engine.bitmaps.invalidate()
        engine.flush()
        freed = sum(1 for b in changes if int(offsets[b]) != 0)
        return freed, len(bitmap_changes)

    def zero_blocks(self, blocks: np.ndarray, offsets: np.ndarray) -> list[int]:
        """The blocks among ``blocks`` (FULLY_PRESENT) whose visible bytes are all zero.

        Blocks are read in file order (sequential I/O). Each starts with a ``SCAN_PROBE`` read;
        only a block that is zero so far is read on, ``IO_CHUNK`` at a time, until its first
        non-zero byte. Bytes of the block past the virtual disk's end are not looked at, and bytes
        past the end of the file read as zero (as the engine reads them, 8.7).
        """
        engine = self.engine
        g = engine.geometry
        order = blocks[np.argsort(offsets[blocks], kind="stable")].tolist()
        lengths = [g.block_virtual_length(b) for b in order]
        reporter = self.reporter
        reporter.total = sum(lengths)
        reporter.start()
        readinto = engine.source.readinto
        buf = self._buffer
        found = []
        for block, length in zip(order, lengths):
            base = int(offsets[block])
            pos = 0
            step = min(SCAN_PROBE, length)
            zero = True
            while pos < length:
                view = buf[:step]
                got = readinto(base + pos, view)
                self.bytes_read += got
                if got and not _all_zero(view[:got]):
                    zero = False
                    break
                if got < step:  # the end of the file: the rest reads as zeros
                    break
                pos += step
                step = min(IO_CHUNK, length - pos)
            if zero:
                found.append(block)
            reporter.advance(length)
        reporter.finish()
        return found

    def unused_bitmaps(self, states: np.ndarray, changes: dict[int, int]) -> list[int]:
        """Chunks whose sector bitmap block is present but consulted by no read once ``changes``
        apply: no PARTIALLY_PRESENT block left in the chunk (8.2, 9), or no parent at all."""
        engine = self.engine
        g = engine.geometry
        indices = g.bitmap_bat_indices()
        indices = indices[indices < len(engine.image.bat)]  # a last SB entry past the region reads NOT_PRESENT (8.5)
        present = np.flatnonzero((engine.image.bat[indices] & np.uint64(BAT_STATE_MASK)) == _SB_PRESENT)
        if not present.size:
            return []
        if not engine.differencing:
            return present.tolist()
        partial = states == _PARTIAL
        for block, value in changes.items():
            partial[block] = (value & BAT_STATE_MASK) == _PARTIAL
        cr = g.chunk_ratio
        padded = np.zeros(g.sector_bitmap_block_count * cr, dtype=bool)
        padded[: partial.size] = partial
        in_use = padded.reshape(-1, cr).any(axis=1)
        return [int(k) for k in present.tolist() if not in_use[k]]

    # --- step 2: move ----------------------------------------------------------------------------------
    def plan(self) -> tuple[list[Move], int]:
        """Where each block goes (on the committed BAT), and the file's end afterwards."""
        engine = self.engine
        g = engine.geometry
        header = engine.journal.header
        reserved = [(0, HEADER_SECTION_SIZE)]
        if header.log_length:
            reserved.append((header.log_offset, header.log_offset + header.log_length))
        reserved += [(e.file_offset, e.end) for e in engine.image.region_table.entries]
        payload = engine.payload
        states = payload & np.uint64(BAT_STATE_MASK)
        # Arrays, not one Python object per block: an image can have millions of them. Offsets
        # fit an int64: a writable open refuses blocks past the end of the file (model/bat.py).
        blocks = np.flatnonzero((states == _FULL) | (states == _PARTIAL))
        offsets = (payload[blocks] & np.uint64(BAT_FILE_OFFSET_MASK)).view(np.int64)
        del states
        chunks = np.zeros(0, dtype=np.int64)
        bitmap_offsets = np.zeros(0, dtype=np.int64)
        if engine.differencing:
            bat = engine.image.bat
            indices = g.bitmap_bat_indices()
            inside = indices < len(bat)
            entries = bat[indices[inside]]
            chunks = np.flatnonzero((entries & np.uint64(BAT_STATE_MASK)) == _SB_PRESENT)
            bitmap_offsets = (entries[chunks] & np.uint64(BAT_FILE_OFFSET_MASK)).view(np.int64)
        if chunks.size:
            offsets = np.concatenate((offsets, bitmap_offsets))
            blocks = np.concatenate((blocks, chunks))
        lengths = np.full(len(offsets), g.block_size, dtype=np.int64)
        lengths[len(offsets) - len(chunks) :] = SECTOR_BITMAP_BLOCK_SIZE
        bitmap = np.zeros(len(offsets), dtype=bool)
        bitmap[len(offsets) - len(chunks) :] = True
        return plan_block_moves(offsets, lengths, blocks, bitmap, reserved)

    def move(self, moves: list[Move]) -> None:
        """Copy the planned blocks in batches; after each batch, sync and switch the BAT entries
        through the log (the flush does both, payload first)."""
        if not moves:
            return
        engine = self.engine
        reporter = self.reporter
        reporter.total = sum(m.length for m in moves)
        reporter.start()
        engine.journal.begin(visible=False)  # a move changes nothing a reader sees (1.2, 5.4)
        batch: list[Move] = []
        batch_bytes = 0
        for m in moves:
            self.copy(m.source, m.target, m.length)
            reporter.advance(m.length)
            batch.append(m)
            batch_bytes += m.length
            if batch_bytes >= MOVE_BATCH:
                self._switch(batch)
                batch, batch_bytes = [], 0
        self._switch(batch)
        reporter.finish()

    def _switch(self, batch: list[Move]) -> None:
        engine = self.engine
        geometry = engine.geometry
        for m in batch:
            if m.bitmap:
                index = geometry.bitmap_bat_index(m.index)
                engine._set_bat(index, make_entry(_SB_PRESENT, m.target))
            else:
                state = int(engine.payload[m.index]) & BAT_STATE_MASK
                engine._set_payload_entry(m.index, make_entry(state, m.target))
        engine.flush()  # sync the copies, then commit the BAT sectors through the log (10.6)

    def copy(self, source: int, target: int, length: int) -> None:
        """Copy ``length`` file bytes from ``source`` to ``target`` (ranges that do not overlap).

        On a file with a descriptor the kernel copies (``os.copy_file_range``: no round trip
        through this process, and a reflink on file systems that share extents); anything it
        does not do (another kind of source, a file system that refuses, the end of the file) is
        copied through the buffer. Bytes past the end of the file read as zeros (8.7).
        """
        src = self.engine.source
        done = 0
        fd = getattr(src, "fd", -1)
        if self._kernel_copy and isinstance(fd, int) and fd >= 0:
            try:
                while done < length:
                    n = os.copy_file_range(fd, fd, length - done, source + done, target + done)
                    if n <= 0:
                        break  # the end of the file: the rest reads as zeros
                    done += n
            except OSError:
                self._kernel_copy = False  # not supported here: the buffer does the rest
            self.bytes_read += done
            self.bytes_written += done
        buf = self._buffer
        while done < length:
            n = min(IO_CHUNK, length - done)
            view = buf[:n]
            got = src.readinto(source + done, view)
            self.bytes_read += got
            if got < n:  # a block that passes the end of the file: its missing tail reads as zeros
                view[got:] = bytes(n - got)
            src.pwrite(target + done, view)
            self.bytes_written += n
            done += n


def plan_moves(objects: list[tuple[int, int, int, bool]], reserved: list[tuple[int, int]]) -> tuple[list[Move], int]:
    """``plan_block_moves`` with the objects given as ``(file_offset, length, index, bitmap)``
    tuples (for a few objects; ``plan`` passes arrays)."""
    return plan_block_moves(np.array([o[0] for o in objects], dtype=np.int64),
                            np.array([o[1] for o in objects], dtype=np.int64),
                            np.array([o[2] for o in objects], dtype=np.int64),
                            np.array([o[3] for o in objects], dtype=bool), reserved)


def plan_block_moves(offsets: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64], indices: npt.NDArray[np.int64],
                     bitmap: npt.NDArray[np.bool_], reserved: list[tuple[int, int]]) -> tuple[list[Move], int]:
    """Plan a compaction: object ``i`` is ``lengths[i]`` bytes at ``offsets[i]``, payload block
    ``indices[i]`` (or the sector bitmap block of chunk ``indices[i]`` when ``bitmap[i]``);
    ``reserved`` the ``(start, end)`` ranges nothing may move into (header section, log, regions).

    The highest object goes to the lowest hole (1 MiB-aligned free space, VHDX-FORMAT.md 1.2) that
    holds it and lies below it, then the next highest, and so on until one cannot move lower:
    from there on the file's end is fixed and moving lower objects would gain nothing. Holes are
    the free space *before* any move; the space a moved object leaves is never reused in the same
    plan (it is still referenced until the move is committed). Holes only shrink, so the search
    for the first hole big enough for a given length never goes back (one pointer per length).
    Objects at one offset are taken in the order given.

    The holes and the order come from sorts of the arrays; Python only walks the objects that
    move (and the one that stops the walk), so a plan of millions of blocks of which few move
    costs a few array passes.

    Returns:
        The moves, highest object first, and the end of the last structure once they are done.
    """
    count = len(offsets)
    final_end = max((e for _, e in reserved), default=0)
    if not count:
        return [], final_end
    ascending = np.argsort(offsets, kind="stable")
    # Free space: every span (reserved range or object) in order of start; a hole lies between the
    # furthest end so far and the next start (1 MiB-aligned inwards). Of two spans with one start
    # either may come first: the second starts before the first ends, so no hole is between them.
    starts = offsets[ascending]
    ties = bool(np.any(starts[1:] == starts[:-1]))
    reach = starts + lengths[ascending]
    spans = sorted((s, e) for s, e in reserved if e > s)
    if spans:  # a few ranges, put in their places among the sorted objects
        at = np.searchsorted(starts, [s for s, _ in spans])
        starts = np.insert(starts, at, [s for s, _ in spans])
        reach = np.insert(reach, at, [e for _, e in spans])
    np.maximum.accumulate(reach, out=reach)  # the furthest end so far
    lo = np.empty_like(reach)
    lo[0] = 0
    lo[1:] = reach[:-1]
    del reach
    np.maximum(lo, 0, out=lo)
    lo += OBJECT_ALIGNMENT - 1  # align_up
    lo -= lo % OBJECT_ALIGNMENT
    starts -= starts % OBJECT_ALIGNMENT  # align_down (starts are not negative)
    found = starts > lo
    hole_lo: list[int] = lo[found].tolist()
    hole_hi: list[int] = starts[found].tolist()
    del lo, starts, found
    # Highest first; objects at one offset in the order given (as a stable sort puts them).
    descending = np.argsort(-offsets, kind="stable") if ties else ascending[::-1]
    first_fit: dict[int, int] = {}
    moves: list[Move] = []
    stopped_at = count
    walk = 4096  # objects fetched to Python at a time: the walk usually stops early
    for base in range(0, count, walk):
        part = descending[base : base + walk]
        for i, (offset, length) in enumerate(zip(offsets[part].tolist(), lengths[part].tolist())):
            h = first_fit.get(length, 0)
            while h < len(hole_lo) and hole_hi[h] - hole_lo[h] < length:
                h += 1
            first_fit[length] = h
            if h == len(hole_lo) or hole_lo[h] >= offset:
                stopped_at = base + i
                break
            target = hole_lo[h]
            hole_lo[h] += length
            j = int(part[i])
            moves.append(Move(int(indices[j]), bool(bitmap[j]), offset, target, length))
            final_end = max(final_end, target + length)
        if stopped_at < count:
            break
    if stopped_at < count:
        rest = descending[stopped_at:]
        final_end = max(final_end, int((offsets[rest] + lengths[rest]).max()))
    return moves, final_end


def _all_zero(view: memoryview) -> bool:
    n = len(view)
    words = n // 8
    data = np.frombuffer(view, dtype=np.uint8)
    if words and data[: words * 8].view(np.uint64).any():
        return False
    return not data[words * 8 :].any()


def _writable_fileobj(fileobj: object) -> bool:
    writable = getattr(fileobj, "writable", None)
    if writable is None:
        return hasattr(fileobj, "write")
    try:
        return bool(writable())
    except (ValueError, io.UnsupportedOperation):
        return False


def _label(image: object) -> str:
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return str(getattr(image, "name", None) or f"<{type(image).__name__}>")


# --- fixed images -------------------------------------------------------------------------------------
def _convert_fixed(engine: WritableEngine, path: str | os.PathLike[str], name: str, started: float,
                   progress: ProgressCallback | None) -> CompactResult:
    """Replace the fixed image at ``path`` by a dynamic copy of it (``convert`` allocates no block
    that reads all zero, whatever ``scan_zeros`` says), keeping its Virtual Disk ID and DataWriteGuid, so that children stay linked
    (what reads return is unchanged, 5.4). The copy is built under a temporary name next to it
    and renamed over it once complete and flushed; ``engine`` (which holds the writer's lock on
    the original) is only read. Unknown regions and user metadata items are not carried over.
    """
    from .convert import convert  # ops -> ops; convert is only needed here

    size_before = engine.source.size()
    image = engine.image
    disk_id = image.metadata.virtual_disk_id
    data_write_guid = image.headers.current.data_write_guid
    fd, tmp = newfile.make_temp(path, suffix=".vhdx")
    os.close(fd)
    os.unlink(tmp)  # convert makes the file itself (and refuses to overwrite)
    try:
        result = convert(path, tmp, src_format="vhdx", dst_format="vhdx", disk_type="dynamic", progress=progress)
        new = open_engine(tmp, writable=True)
        assert isinstance(new, WritableEngine)
        try:
            if new.image.metadata.virtual_disk_id != disk_id:
                new.stage_metadata(dataclasses.replace(new.image.metadata, virtual_disk_id=disk_id), None, visible=False)
                new.flush()
            new.journal.begin(visible=False)
            new.journal.update_header(data_write_guid=data_write_guid)
            new.journal.close_session()
            new.source.sync()
        finally:
            new.close()
        newfile.publish(tmp, path, overwrite=True)
    except BaseException:
        newfile.discard(tmp)
        raise
    size_after = os.stat(path).st_size
    return CompactResult(
        image=name,
        disk_type="dynamic",
        converted=True,
        bytes_read=result.bytes_read,
        bytes_written=result.bytes_written,
        blocks_freed=image.geometry.payload_block_count - result.blocks_allocated,
        blocks_moved=0,
        sector_bitmap_blocks_freed=0,
        sector_bitmap_blocks_moved=0,
        file_size_before=size_before,
        file_size_after=size_after,
        bytes_reclaimed=size_before - size_after,
        seconds=time.perf_counter() - started,
    )


__all__ = ["CompactResult", "Move", "compact", "plan_block_moves", "plan_moves"]
