"""resize(): change the virtual size of a fixed or dynamic VHDX image in place (grow or shrink).

The format leaves resizing to implementations; this follows the recommended procedure of
VHDX-FORMAT.md 13, with every metadata change made through the log (6.4, 10.6) so that a crash
at any point leaves either the old disk or the new one:

* **Grow.** The BAT keeps its layout: chunk boundaries depend only on the sector size, so no
  existing entry moves (8.4) and the new entries follow the old ones. New payload entries are
  NOT_PRESENT (dynamic) or FULLY_PRESENT blocks preallocated at the end of the file (fixed: the file
  is extended over them, so they read as zeros). The BAT region bytes that become entries are
  compared with what they must hold (zeros, new fixed entries) and every sector that differs is
  staged; leftovers of an earlier, larger BAT are never trusted.
  When the new BAT does not fit its region (8.5-8.6), or its in-place changes would not fit one
  log entry, a new BAT is written to fresh space at the end of the file (1 MiB aligned, sized for
  twice the new virtual size so that the next grow fits too). Nothing references that space yet,
  so it is written directly and synced; one log entry then points both region tables at it and
  changes the virtual size. The old BAT region is zeroed once that entry is durable: it becomes
  free space (reads as zero, which ``vhdx check`` reports as free rather than leaked) that
  compaction reclaims.
  A partial last block may hold stale bytes past the old end (a shrink keeps them); they are
  zeroed, as payload written and synced before the size changes, so the range a grow exposes reads
  as zeros.
* **Shrink.** Refused while a stored block holds a non-zero byte past the new end, unless
  ``force``; the error names the first such virtual offset. Entries past the end become
  NOT_PRESENT (zero, as is every leftover entry of the old BAT), the size changes, all in one log
  entry. In a fixed image (LeaveBlockAllocated) the blocks past the new end simply no longer exist
  (VHDX-FORMAT.md 12.5 forbids NOT_PRESENT blocks *within* the size only). A block that the new
  end cuts keeps its storage. Then, with the log committed and marked empty, the file is truncated
  to its last remaining structure when blocks were freed (10.6 step 6); freed blocks that are not
  at the end of the file stay behind as leaks for compaction. After a forced shrink the bytes of
  the cut block past the new end are zeroed once the change is durable (not before: until then
  they are part of the disk).
* **Differencing images** are refused: a child's size must equal its parent's (7.7 step 4), so a
  chain is resized from the base up, which is out of scope (13). Resizing an image that *is* a
  parent changes its DataWriteGuid (a visible change, 5.4), which orphans its children: that is
  inherent in the format.

Sizes must be multiples of the logical sector size (MS-VHDX 2.6.2.2), above 0 and at most 64 TiB;
other values are refused rather than rounded.

References: MS-VHDX 2.2.3, 2.5, 2.6.2.2; VHDX-FORMAT.md 6.4, 8.4-8.6, 10.6, 12, 13.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from .._units import align_down, align_up, format_size
from ..constants import (
    BAT_ENTRY_SIZE,
    BAT_FILE_OFFSET_MASK,
    BAT_STATE_MASK,
    LOG_SECTOR_SIZE,
    MAX_VIRTUAL_DISK_SIZE,
    OBJECT_ALIGNMENT,
    REGION_TABLE_SIZE,
    MiB,
    PayloadBlockState,
)
from ..disk import open_engine
from ..engine.buffers import io_buffer
from ..engine.mapping import DATA
from ..engine.writer import WritableEngine
from ..errors import ParentError, UnsupportedError, VhdxError
from ..model.geometry import DiskGeometry
from ..model.region_table import RegionTable
from ..structs import bat as bat_struct
from ._check_scan import _data_ranges as data_ranges
from .progress import ProgressCallback, ProgressReporter
from .result import OperationResult

OPERATION = "resize"
# BAT bytes compared or written per step (a multiple of the 4 KiB log sector).
BAT_WINDOW = 8 * MiB
# Payload bytes read per step when looking for data past the new end of a shrink.
SCAN_CHUNK = 8 * MiB
# A relocated BAT region is sized for this many times the new virtual size (capped at 64 TiB).
BAT_SPARE_FACTOR = 2
# Both region tables, staged whole (VHDX-FORMAT.md 6.4).
REGION_TABLE_LOG_SECTORS = 2 * REGION_TABLE_SIZE // LOG_SECTOR_SIZE
ENTRIES_PER_SECTOR = LOG_SECTOR_SIZE // BAT_ENTRY_SIZE
DIFFERENCING_REFUSED = ("cannot resize a differencing image: its size must stay equal to its parent's (resize the "
                        "base image, then create its children anew)")

_FULL = int(PayloadBlockState.FULLY_PRESENT)
_PARTIAL = int(PayloadBlockState.PARTIALLY_PRESENT)
_ZEROS = bytes(OBJECT_ALIGNMENT)  # written in pieces of this size


@dataclass(frozen=True)
class ResizeResult(OperationResult):
    """What ``resize`` did.

    Attributes:
        image: the image, as given (a file object's name for a stream).
        disk_type: ``"fixed"`` or ``"dynamic"``.
        old_size, new_size: virtual size in bytes before and after.
        bat_relocated: the BAT moved to a new, larger region at the end of the file.
        bat_offset_before, bat_offset_after: file offset of the BAT region before and after.
        bat_length_before, bat_length_after: length of the BAT region before and after.
        blocks_allocated: payload blocks added (new blocks of a fixed image).
        blocks_freed: payload blocks with storage dropped by a shrink.
        bytes_written: payload bytes written (zeros over the part of a partial last block past the
            old end before a grow, or past the new end after a forced shrink).
        file_size_before, file_size_after: length of the file before and after.
        seconds: wall time.
    """

    image: str
    disk_type: str
    old_size: int
    new_size: int
    bat_relocated: bool
    bat_offset_before: int
    bat_offset_after: int
    bat_length_before: int
    bat_length_after: int
    blocks_allocated: int
    blocks_freed: int
    bytes_written: int
    file_size_before: int
    file_size_after: int
    seconds: float


def resize(image: str | os.PathLike[str] | BinaryIO, size: int, *, force: bool = False,
           progress: ProgressCallback | None = None) -> ResizeResult:
    """Set the virtual size of the fixed or dynamic VHDX ``image`` to ``size`` bytes, in place.

    Args:
        image: a path, or a seekable read-write binary file object (left open).
        size: the new virtual size: a multiple of the logical sector size, from one sector to
            64 TiB. The current size does nothing (the file is not written).
        force: shrink even when stored data lies past the new end (it is dropped).
        progress: called as the work advances, in phases that each start from 0 (unit
            ``"bytes"``): virtual bytes past the new end of a shrink examined for data, then BAT
            bytes compared (in place) or written (moved).

    Returns:
        A ``ResizeResult``.

    A resize is a change a reader sees, so the image gets a new DataWriteGuid (VHDX-FORMAT.md
    5.4): differencing images made from it no longer match it (they open only with
    ``ignore_id_mismatch``). Nothing can look for such children; resize a base without any.

    Raises:
        ValueError: ``size`` is out of range or not a multiple of the logical sector size.
        UnsupportedError: the image is a differencing disk, or its log is too small to hold the
            change in one entry.
        VhdxError: a shrink would drop stored data (the message names the first virtual offset)
            and ``force`` is not set; the image cannot be read; another writer holds it.
        OSError: the file cannot be opened for writing.
    """
    started = time.monotonic()
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"size must be an int, not {type(size).__name__}")
    if size <= 0:
        raise ValueError(f"the new size must be positive (got {size})")
    if size > MAX_VIRTUAL_DISK_SIZE:
        raise ValueError(f"the new size {size} is over the 64 TiB limit ({MAX_VIRTUAL_DISK_SIZE} bytes)")
    try:
        engine = open_engine(image, writable=True, require_parent=False)
    except ParentError as err:
        # A writable open needs the whole chain; only a differencing image has one to look for.
        raise UnsupportedError(DIFFERENCING_REFUSED, image=err.image, structure="file parameters") from err
    try:
        assert isinstance(engine, WritableEngine)
        outcome = _Resize(engine, size, force, ProgressReporter(progress, OPERATION, None)).run()
    except BaseException:
        # Nothing half-staged may be committed by close(): the change lands whole or not at all.
        if isinstance(engine, WritableEngine):
            engine.journal.discard()
        engine.close()
        raise
    engine.close()
    # The engine's geometry does not follow the change: read the file anew to confirm it.
    reopened = open_engine(image)
    try:
        if reopened.size != size:
            raise VhdxError(f"the image reads {reopened.size} bytes after resizing to {size}",
                            image=reopened.image.name, structure="virtual disk size")
        bat_after = reopened.image.region_table.bat
        file_size_after = reopened.image.raw_source.size()
    finally:
        reopened.close()
    return ResizeResult(
        image=os.fspath(image) if isinstance(image, (str, os.PathLike)) else outcome.name,
        disk_type=outcome.disk_type,
        old_size=outcome.old_size,
        new_size=size,
        bat_relocated=outcome.relocated,
        bat_offset_before=outcome.bat_offset_before,
        bat_offset_after=bat_after.file_offset,
        bat_length_before=outcome.bat_length_before,
        bat_length_after=bat_after.length,
        blocks_allocated=outcome.blocks_allocated,
        blocks_freed=outcome.blocks_freed,
        bytes_written=outcome.bytes_written,
        file_size_before=outcome.file_size_before,
        file_size_after=file_size_after,
        seconds=time.monotonic() - started,
    )


@dataclass
class _Outcome:
    name: str
    disk_type: str
    old_size: int
    file_size_before: int
    bat_offset_before: int
    bat_length_before: int
    relocated: bool = False
    blocks_allocated: int = 0
    blocks_freed: int = 0
    bytes_written: int = 0


class _Resize:
    """One resize, step by step (see the module docstring for the order and why)."""

    def __init__(self, engine: WritableEngine, size: int, force: bool, reporter: ProgressReporter) -> None:
        self.engine = engine
        self.size = size
        self.force = force
        self.reporter = reporter
        image = engine.image
        self.name = image.name
        self.old = engine.geometry
        self.bat_region = image.region_table.bat
        self.outcome = _Outcome(name=self.name, disk_type=image.disk_type, old_size=self.old.virtual_size,
                                file_size_before=engine.source.size(), bat_offset_before=self.bat_region.file_offset,
                                bat_length_before=self.bat_region.length)

    def run(self) -> _Outcome:
        engine, old, size = self.engine, self.old, self.size
        if engine.differencing:
            raise UnsupportedError(DIFFERENCING_REFUSED, image=self.name, structure="file parameters")
        ss = old.logical_sector_size
        if size % ss:
            below = align_down(size, ss)
            raise ValueError(f"the new size {size} is not a multiple of the {ss}-byte logical sector size "
                             f"(nearest: {below or ss} or {below + ss})")
        if size == old.virtual_size:
            return self.outcome
        self.new = DiskGeometry(size, old.block_size, ss)
        grow = size > old.virtual_size
        if not grow and not self.force:
            self._refuse_if_data_past(size)
        old_blocks, new_blocks = old.payload_block_count, self.new.payload_block_count
        payload = engine.payload
        if not grow:
            dropped = payload[new_blocks:old_blocks]
            self.outcome.blocks_freed = int(np.count_nonzero(self._has_storage(dropped)))
        self._reserve_known_storage()

        # 1. The session's header update (new FileWriteGuid and LogGuid) precedes every other
        #    change (VHDX-FORMAT.md 5.4). The DataWriteGuid changes only with the metadata below:
        #    nothing before it is visible (it all lies past the old end or in unreferenced space),
        #    so a failure on the way (a file system refusing a file that large) leaves children
        #    of this image linked to it.
        journal = engine.journal
        journal.begin(visible=False)
        # 2. Payload first: stale bytes the grow exposes, new blocks of a fixed image.
        if grow:
            self._zero_stale_tail()
        self.fixed_base = 0
        self.fixed_new = new_blocks - old_blocks if grow and engine.fixed else 0
        if self.fixed_new:
            try:
                self.fixed_base = engine.allocator.allocate(self.fixed_new * old.block_size)
            except OSError as err:
                raise OSError(err.errno, f"{err.strerror} (a fixed image of {format_size(size)} needs a file that "
                              "large)", self.name) from err
            self.outcome.blocks_allocated = self.fixed_new
        # 3. Metadata (a new DataWriteGuid first), then the BAT, staged for one log entry.
        engine.stage_metadata(dataclasses.replace(engine.image.metadata, virtual_disk_size=size), None, visible=True)
        self.capacity = journal.header.log_length // LOG_SECTOR_SIZE
        self.lo = old.payload_bat_index(min(old_blocks, new_blocks))  # first entry that may change
        self.hi = max(len(engine.image.bat), self.new.bat_entry_count_full)  # past the last entry of either BAT
        fits = self.new.bat_entry_count_full * BAT_ENTRY_SIZE <= self.bat_region.length
        plan = self._plan_in_place() if fits else None
        if plan is not None:
            zero_range, sectors = plan
            if zero_range is not None:
                journal.stage_zero(self.bat_region.file_offset + zero_range[0], zero_range[1] - zero_range[0])
            for offset, data in sectors.items():
                journal.stage(self.bat_region.file_offset + offset, data)
        else:
            self._relocate()
        if journal.staged_log_sectors() > self.capacity:  # _plan_in_place/_relocate made sure of this
            raise AssertionError("the resize does not fit one log entry")
        # 4. Commit: payload synced, then the one entry written, synced and applied (10.6).
        engine.flush()
        if self.outcome.relocated:
            self._zero_old_bat()
        if not grow and self.force:
            self._zero_cut_tail()
        if self.outcome.blocks_freed:
            end = self._storage_end()
            if end < engine.source.size():
                engine.truncate_file(end)  # commits, empties the log, then truncates (10.6 step 6)
        self.reporter.finish()
        return self.outcome

    def _phase(self, total: int) -> None:
        self.reporter.total = total
        self.reporter.start()

    # --- shrink: is anything lost? ---------------------------------------------------------------------
    def _refuse_if_data_past(self, size: int) -> None:
        """Raise when a stored block holds a non-zero byte at or past virtual ``size``.

        Only stored ranges are read, and of those only what is not a file system hole (a sparse
        fixed image's untouched blocks cost nothing); a preallocated fixed image has its whole
        tail read.
        """
        engine = self.engine
        source = engine.source
        view = io_buffer(SCAN_CHUNK)
        self._phase(self.old.virtual_size - size)  # virtual bytes examined
        for extent in engine.extents(size, self.old.virtual_size - size):
            if extent.state != DATA or extent.file_offset is None:
                self.reporter.advance(extent.length)
                continue
            base = extent.file_offset
            for lo, hi in data_ranges(source, base, base + extent.length):
                pos = lo
                while pos < hi:
                    n = min(SCAN_CHUNK, hi - pos)
                    got = source.readinto(pos, view[:n])  # short past the end of the file: zeros
                    nonzero = np.flatnonzero(np.frombuffer(view, dtype=np.uint8, count=got))
                    if len(nonzero):
                        first = extent.virtual_offset + (pos - base) + int(nonzero[0])
                        raise VhdxError(
                            f"refusing to shrink to {size} bytes ({format_size(size)}): virtual offset 0x{first:x} "
                            f"({first}) past the new end holds data; shrink the file system first, or force the "
                            "shrink to drop it", image=self.name, structure="virtual disk")
                    pos += n
            self.reporter.advance(extent.length)

    # --- storage bookkeeping ----------------------------------------------------------------------------
    @staticmethod
    def _has_storage(entries: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
        states = entries & np.uint64(BAT_STATE_MASK)
        return (states == np.uint64(_FULL)) | (states == np.uint64(_PARTIAL)) | \
            ((entries & np.uint64(BAT_FILE_OFFSET_MASK)) != np.uint64(0))

    def _reserve_known_storage(self) -> None:
        """Keep new space clear of every block any entry points at (whatever its state): the
        allocator counts only present blocks, and an entry may point past the end of the file."""
        bat = self.engine.image.bat
        offsets = bat & np.uint64(BAT_FILE_OFFSET_MASK)
        if len(offsets) and offsets.any():
            end = int(offsets.max()) + self.old.block_size
            allocator = self.engine.allocator
            allocator.end = max(allocator.end, align_up(end, OBJECT_ALIGNMENT))

    def _storage_end(self) -> int:
        """End of the last structure once the shrink is committed (log, regions, kept blocks)."""
        engine = self.engine
        header = engine.journal.header
        ends = [header.log_offset + header.log_length] + [e.end for e in engine.image.region_table.entries]
        kept = engine.payload[: self.new.payload_block_count]
        offsets = kept[self._has_storage(kept)] & np.uint64(BAT_FILE_OFFSET_MASK)
        if len(offsets):
            ends.append(int(offsets.max()) + self.old.block_size)
        return align_up(max(ends), OBJECT_ALIGNMENT)

    # --- grow: the partial last block -------------------------------------------------------------------
    def _zero_stale_tail(self) -> None:
        """Zero the bytes of the old last block between the old end and the new one.

        A partial last block is a whole block in the file; its bytes past the old end are not part
        of the disk and may hold anything (a shrink leaves them as they were). They become visible
        now, so they are written as zeros, before the size change is committed (the commit syncs
        them first). A block whose storage passes the end of the file (QEMU makes such fixed
        images) has the file extended over it, so that it no longer looks truncated.
        """
        old = self.old
        tail = self._partial_last_block(old)
        if tail is None:
            return
        file_offset, used = tail
        exposed = min(old.block_size, self.size - (old.virtual_size - used))
        source = self.engine.source
        file_size = source.size()
        self._write_zeros(file_offset + used, min(file_offset + exposed, file_size))
        if file_size < file_offset + old.block_size:
            source.truncate(file_offset + old.block_size)

    def _zero_cut_tail(self) -> None:
        """After a forced shrink is durable, zero what the cut block holds past the new end.

        Those bytes are no longer part of the disk, so writing them is safe now (and was not
        before the commit); zeroing them keeps dropped data from reappearing should another tool
        grow the disk without clearing them (a shrink that was not forced found them zero).
        """
        new = self.new
        tail = self._partial_last_block(new)
        if tail is None:
            return
        file_offset, used = tail
        source = self.engine.source
        lo, hi = file_offset + used, min(file_offset + new.block_size, source.size())
        self._write_zeros(lo, hi)
        source.sync()

    def _partial_last_block(self, g: DiskGeometry) -> tuple[int, int] | None:
        """(file offset, bytes of the disk in it) of the last payload block of geometry ``g``,
        when the disk ends inside that block and it is FULLY_PRESENT; None otherwise (a block
        in any other state reads as zeros whatever the file holds)."""
        if not g.payload_block_count:
            return None
        last = g.payload_block_count - 1
        used = g.virtual_size - (last << g.block_shift)
        if used == g.block_size:
            return None
        entry = int(self.engine.payload[last])
        if entry & BAT_STATE_MASK != _FULL:
            return None
        return entry & BAT_FILE_OFFSET_MASK, used

    def _write_zeros(self, lo: int, hi: int) -> None:
        source = self.engine.source
        pos = lo
        while pos < hi:
            n = min(len(_ZEROS), hi - pos)
            source.pwrite(pos, memoryview(_ZEROS)[:n])
            pos += n
        self.outcome.bytes_written += max(0, hi - lo)

    # --- the new BAT ----------------------------------------------------------------------------------
    def _expected(self, first: int, stop: int) -> npt.NDArray[np.uint64]:
        """The new BAT's entries ``first`` to ``stop`` (exclusive).

        Entries before ``lo`` are unchanged (the in-memory BAT is the durable one: nothing was
        staged); from ``lo`` on every entry is zero (NOT_PRESENT, SB_BLOCK_NOT_PRESENT), except the
        new blocks of a fixed image, FULLY_PRESENT one after another from ``fixed_base``.
        """
        out = np.zeros(stop - first, dtype=np.uint64)
        keep = min(stop, self.lo) - first
        if keep > 0:
            out[:keep] = self.engine.image.bat[first : first + keep]
        if self.fixed_new and stop > self.lo:
            old, cr = self.old, self.old.chunk_ratio
            index = np.arange(max(first, self.lo), stop, dtype=np.int64)
            chunk, slot = np.divmod(index, cr + 1)
            block = chunk * cr + slot
            new = (slot < cr) & (block >= old.payload_block_count) & (block < self.new.payload_block_count)
            offsets = self.fixed_base + (block[new] - old.payload_block_count) * old.block_size
            out[index[new] - first] = offsets.astype(np.uint64) | np.uint64(_FULL)
        return out

    def _plan_in_place(self) -> tuple[tuple[int, int] | None, dict[int, bytes]] | None:
        """The BAT sectors to stage in place (offsets within the region): a zero range for the
        sectors that must become all zero, data sectors for the rest; None when they would not fit
        one log entry along with what is staged already."""
        engine, lo, hi = self.engine, self.lo, self.hi
        region = self.bat_region
        start = align_down(lo * BAT_ENTRY_SIZE, LOG_SECTOR_SIZE)
        stop = align_up(hi * BAT_ENTRY_SIZE, LOG_SECTOR_SIZE)
        zero_lo = zero_hi = -1
        sectors: dict[int, bytes] = {}
        self._phase(stop - start)  # BAT bytes compared
        buf = bytearray(min(BAT_WINDOW, max(stop - start, LOG_SECTOR_SIZE)))
        pos = start
        while pos < stop:
            n = min(len(buf), stop - pos)
            view = memoryview(buf)[:n]
            engine.journal.read_into(region.file_offset + pos, view)
            current = bat_struct.parse(view)
            first = pos // BAT_ENTRY_SIZE
            expected = self._expected(first, first + len(current))
            if first + len(current) > hi:  # past both BATs: whatever is there stays
                expected[hi - first :] = current[hi - first :]
            differ = np.flatnonzero((current != expected).reshape(-1, ENTRIES_PER_SECTOR).any(axis=1))
            for j in differ.tolist():
                offset = pos + j * LOG_SECTOR_SIZE
                inside = offset >= lo * BAT_ENTRY_SIZE and offset + LOG_SECTOR_SIZE <= hi * BAT_ENTRY_SIZE
                if inside and not self.fixed_new:
                    # Wholly among the entries that become zero: one zero descriptor covers them all.
                    zero_lo = offset if zero_lo < 0 else zero_lo
                    zero_hi = offset + LOG_SECTOR_SIZE
                else:
                    sectors[offset] = bat_struct.build(expected[j * ENTRIES_PER_SECTOR : (j + 1) * ENTRIES_PER_SECTOR])
            if engine.journal.staged_log_sectors(len(sectors), 1) > self.capacity:
                return None
            self.reporter.advance(n)
            pos += n
        zero_range = (zero_lo, zero_hi) if zero_lo >= 0 else None
        return zero_range, sectors

    def _relocate(self) -> None:
        """Write the new BAT to fresh space at the end of the file and point the region tables at it."""
        engine, new = self.engine, self.new
        journal = engine.journal
        if journal.staged_log_sectors(REGION_TABLE_LOG_SECTORS) > self.capacity:
            raise UnsupportedError(
                f"the log ({format_size(journal.header.log_length)}) is too small to hold this resize in one entry",
                image=self.name, structure="log", offset=journal.header.log_offset)
        spare = min(MAX_VIRTUAL_DISK_SIZE, BAT_SPARE_FACTOR * self.size)
        roomy = DiskGeometry(spare, new.block_size, new.logical_sector_size)
        length = max(new.bat_region_length, roomy.bat_region_length)
        offset = engine.allocator.allocate(length)  # the extension reads as zeros: only entries are written
        source = engine.source
        count = new.bat_entry_count_full
        window = BAT_WINDOW // BAT_ENTRY_SIZE
        self._phase(count * BAT_ENTRY_SIZE)  # BAT bytes written
        for first in range(0, count, window):
            entries = self._expected(first, min(count, first + window))
            if entries.any():
                source.pwrite(offset + first * BAT_ENTRY_SIZE, bat_struct.build(entries))
            self.reporter.advance(len(entries) * BAT_ENTRY_SIZE)
        table = engine.image.region_table
        entries_after = tuple(dataclasses.replace(e, file_offset=offset, length=length) if e is self.bat_region else e
                              for e in table.entries)
        engine.stage_region_table(RegionTable(entries_after))
        self.outcome.relocated = True

    def _zero_old_bat(self) -> None:
        """Zero the old BAT region once nothing references it (the new tables are durable)."""
        region = self.bat_region
        source = self.engine.source
        pos, end = region.file_offset, region.end
        while pos < end:
            n = min(len(_ZEROS), end - pos)
            source.pwrite(pos, memoryview(_ZEROS)[:n])
            pos += n
        source.sync()


def resolve_size(text: str, current: int, parse: Callable[[str], int]) -> int:
    """The size meant by ``text``: absolute (``10G``) or, as ``qemu-img resize`` takes it,
    relative to ``current`` (``+10G``, ``-1G``). ``parse`` turns the number part into bytes.

    Raises:
        ValueError: the text is not a size, or a relative size goes below zero.
    """
    text = text.strip()
    if text[:1] in ("+", "-"):
        delta = parse(text[1:])
        value = current + delta if text[0] == "+" else current - delta
        if value < 0:
            raise ValueError(f"{text} would make the size negative (the disk is {current} bytes)")
        return value
    return parse(text)


__all__ = ["ResizeResult", "resize", "resolve_size"]
