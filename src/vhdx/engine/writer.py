"""WritableEngine: writes, zeroing and trimming on top of the read engine.

Crash-consistency rules (MS-VHDX 2.2.2.1, 2.4, 2.5; VHDX-FORMAT.md 5.4, 10.6, 12):

* ``Journal.begin`` runs before the first byte of the file changes in a session: new FileWriteGuid
  and LogGuid, and a new DataWriteGuid before the first change a reader could see.
* Payload bytes are written in place; a block without storage gets new space at the end of the
  file (zero-filled by the extension), its data is written there, and only the in-memory BAT (and
  sector bitmap) say so until ``flush``. ``flush`` syncs the payload, then commits the BAT and
  bitmap sectors through the log. A crash before that leaks the new space and nothing else.
* Fixed disks never move blocks: their blocks are written in place, and zeroing writes zeros.
* A differencing write sets only the sectors it covers (PARTIALLY_PRESENT + sector bitmap); edge
  sectors of an unaligned write are completed from the current contents (the parent's bytes).
"""

from __future__ import annotations

import numpy as np

import uuid

from .._units import align_down, align_up
from ..constants import (
    BAT_ENTRY_SIZE,
    BAT_FILE_OFFSET_MASK,
    BAT_STATE_MASK,
    HEADER_SECTION_SIZE,
    LOG_SECTOR_SIZE,
    OBJECT_ALIGNMENT,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    SECTOR_BITMAP_BLOCK_SIZE,
    PayloadBlockState,
    SectorBitmapState,
)
from ..errors import UnsupportedError
from ..model.metadata import Metadata, MetadataItem, build_metadata_region, known_entries, parse_metadata_region, system_items
from ..model.region_table import RegionTable, build_region_table
from ..structs import bat as bat_struct
from ..structs.bat import make_entry
from .allocator import FreeSpace
from .engine import BlockEngine, zero_fill
from .image import Image
from .journal import Journal

_FULL = int(PayloadBlockState.FULLY_PRESENT)
_PARTIAL = int(PayloadBlockState.PARTIALLY_PRESENT)
_NOT_PRESENT = int(PayloadBlockState.NOT_PRESENT)
_ZERO = int(PayloadBlockState.ZERO)
_UNMAPPED = int(PayloadBlockState.UNMAPPED)
_ZERO_CHUNK = bytes(SECTOR_BITMAP_BLOCK_SIZE)
_ENTRIES_PER_LOG_SECTOR = LOG_SECTOR_SIZE // BAT_ENTRY_SIZE


class WritableEngine(BlockEngine):
    """A BlockEngine that can change the top image of its chain."""

    def __init__(self, image: Image, parent: BlockEngine | None = None, *, owns_parent: bool = True) -> None:
        super().__init__(image, parent, owns_parent=owns_parent)
        self.source = image.source
        self.journal = Journal(image.source, image.headers.current, image.headers.current_index)
        self.fixed = image.metadata.leave_block_allocated and not self.differencing
        self._bat_offset = image.region_table.bat.file_offset
        if self.bitmaps is not None:
            # Bitmap reads must see staged (not yet committed) bitmap sectors.
            self.bitmaps._read_into = self.journal.read_into
        self.allocator = FreeSpace(image.source, self._used_end())
        self._data_written = False
        self._dirty_bat_sectors: set[int] = set()

    def _used_end(self) -> int:
        """End of the last structure in the file (regions, log, blocks; blocks may pass EOF).

        Only entries the open validated count: the payload entries (FULLY/PARTIALLY_PRESENT) and,
        in a differencing disk, the sector bitmap entries. The BAT's unused slots (past the last
        chunk's entries) are never read or validated, so a stray value there must not move the
        end of the file (a hostile slot would make the next allocation extend it by terabytes).
        """
        header = self.journal.header
        ends = [header.log_offset + header.log_length]
        ends += [e.end for e in self.image.region_table.entries]
        payload = self.payload
        present = (payload & np.uint64(BAT_STATE_MASK)) >= np.uint64(_FULL)
        if present.any():
            ends.append(int((payload[present] & np.uint64(BAT_FILE_OFFSET_MASK)).max()) + self.geometry.block_size)
        if self.differencing:
            view = self.image.view
            bitmaps = view.bitmap_states == SectorBitmapState.PRESENT
            if bitmaps.any():
                ends.append(int(view.bitmap_offsets[bitmaps].max()) + SECTOR_BITMAP_BLOCK_SIZE)
        return max(ends)

    # --- BAT updates (staged through the journal) --------------------------------------------------
    def _set_payload_entry(self, block: int, value: int) -> None:
        self.payload[block] = value
        index = self.geometry.payload_bat_index(block)
        self._set_bat(index, value)

    def _set_bat(self, index: int, value: int) -> None:
        """Change one BAT entry in memory; its 4 KiB sector is staged whole at the next flush."""
        if int(self.image.bat[index]) == value:
            return
        self.image.bat[index] = value
        self._dirty_bat_sectors.add(index // _ENTRIES_PER_LOG_SECTOR)

    def _stage_bat(self) -> None:
        """Stage every changed BAT sector from the in-memory BAT (one slice per sector, no reads)."""
        bat = self.image.bat
        for sector in sorted(self._dirty_bat_sectors):
            first = sector * _ENTRIES_PER_LOG_SECTOR
            entries = bat[first : first + _ENTRIES_PER_LOG_SECTOR]
            self.journal.stage(self._bat_offset + first * BAT_ENTRY_SIZE, bat_struct.build(entries))
        self._dirty_bat_sectors.clear()

    # --- writes --------------------------------------------------------------------------------------
    def write(self, offset: int, data: memoryview) -> None:
        """Write ``data`` at virtual ``offset`` (the range must lie within the disk)."""
        if not len(data):
            return
        self.journal.begin(visible=True)
        end = offset + len(data)
        pos = offset
        shift, mask = self._shift, self._mask
        while pos < end:
            block = pos >> shift
            n = min(end, (block + 1) << shift) - pos
            piece = data[pos - offset : pos - offset + n]
            entry = int(self.payload[block])
            state = entry & BAT_STATE_MASK
            if state == _FULL:
                self.source.pwrite((entry & BAT_FILE_OFFSET_MASK) + (pos & mask), piece)
            elif self.differencing and state in (_NOT_PRESENT, _PARTIAL):
                self._write_sectors(block, entry, pos, piece)
            else:
                self._write_new_block(block, entry, pos, piece)
            pos += n
        self._data_written = True

    def _write_new_block(self, block: int, entry: int, pos: int, piece: memoryview) -> None:
        """Give a block that reads as zeros storage, with ``piece`` in it; the rest reads zero."""
        block_start = block << self._shift
        old_offset = entry & BAT_FILE_OFFSET_MASK
        if self.fixed and old_offset and self._reusable(old_offset):
            # LeaveBlockAllocated: the block keeps its place; its old bytes may be stale, so the
            # parts not written now are zeroed explicitly.
            file_offset = old_offset
            length = self.geometry.block_virtual_length(block)
            self._pwrite_zeros(file_offset, pos - block_start)
            tail = pos + len(piece) - block_start
            self._pwrite_zeros(file_offset + tail, length - tail)
        else:
            file_offset = self.allocator.allocate(self.block_size)
        self.source.pwrite(file_offset + (pos - block_start), piece)
        self._set_payload_entry(block, make_entry(_FULL, file_offset))

    def _reusable(self, file_offset: int) -> bool:
        """Whether a fixed disk's block that reads as zeros may take back the space its entry
        still names. FileOffsetMB is reserved in those states (MS-VHDX 2.5.1.1) and the open does
        not check it, so a damaged or hostile entry can name the BAT, the metadata, another block
        or a place terabytes past the end: writing there would bypass the log or grow the file
        without bound. Only space inside the used file, past the header section, that nothing
        else claims is taken back; otherwise the block gets new space like a dynamic one."""
        end = file_offset + self.block_size
        if file_offset < HEADER_SECTION_SIZE or end > self.allocator.end:
            return False
        header = self.journal.header
        claimed = [(header.log_offset, header.log_offset + header.log_length)]
        claimed += [(e.file_offset, e.end) for e in self.image.region_table.entries]
        if any(lo < end and file_offset < hi for lo, hi in claimed):
            return False
        bat = self.image.bat
        present = (bat & np.uint64(BAT_STATE_MASK)) >= np.uint64(SectorBitmapState.PRESENT)
        starts = (bat[present] & np.uint64(BAT_FILE_OFFSET_MASK)).astype(np.uint64)
        # Every present entry is taken as a whole block (a sector bitmap block is smaller): an
        # overestimate only sends the write to new space.
        return not bool(np.any((starts < np.uint64(end)) & (starts + np.uint64(self.block_size) > np.uint64(file_offset))))

    def _write_sectors(self, block: int, entry: int, pos: int, piece: memoryview) -> None:
        """Differencing write into a NOT_PRESENT or PARTIALLY_PRESENT block, sector-exact."""
        assert self.bitmaps is not None
        ss = self.sector_size
        block_start = block << self._shift
        a = align_down(pos, ss)
        b = align_up(pos + len(piece), ss)
        if a == pos and b == pos + len(piece):
            buf: memoryview | bytearray = piece
        else:
            buf = bytearray(b - a)
            view = memoryview(buf)
            # Complete the edge sectors from what they read as now (this file or the parent).
            self.read_into(a, view[:ss])
            if b - ss > a:
                self.read_into(b - ss, view[len(buf) - ss :])
            view[pos - a : pos - a + len(piece)] = piece
        if entry & BAT_STATE_MASK == _NOT_PRESENT:
            chunk = self.geometry.chunk_of_block(block)
            if self.bitmap_entry(chunk) & BAT_STATE_MASK != SectorBitmapState.PRESENT:
                bitmap_offset = self.allocator.allocate(SECTOR_BITMAP_BLOCK_SIZE)
                self._set_bat(self.geometry.bitmap_bat_index(chunk), make_entry(SectorBitmapState.PRESENT, bitmap_offset))
                self.bitmaps.invalidate()
            file_offset = self.allocator.allocate(self.block_size)
            new_state = _PARTIAL
        else:
            file_offset = entry & BAT_FILE_OFFSET_MASK
            new_state = _PARTIAL
        self.source.pwrite(file_offset + (a - block_start), buf)
        bits = self.bitmaps.block_bits(block)
        bits[(a - block_start) // ss : (b - block_start) // ss] = 1
        self._stage_bitmap(block, bits)
        if bits.all():
            new_state = _FULL  # every sector is here: the bitmap no longer matters
        self._set_payload_entry(block, make_entry(new_state, file_offset))

    def _stage_bitmap(self, block: int, bits: np.ndarray) -> None:
        lo, _hi = self.geometry.bitmap_byte_range(block)
        chunk = self.geometry.chunk_of_block(block)
        base = self.bitmap_entry(chunk) & BAT_FILE_OFFSET_MASK
        self.journal.stage(base + lo, np.packbits(bits, bitorder="little").tobytes())

    def _pwrite_zeros(self, file_offset: int, length: int) -> None:
        pos = file_offset
        while length > 0:
            n = min(length, len(_ZERO_CHUNK))
            self.source.pwrite(pos, memoryview(_ZERO_CHUNK)[:n])
            pos += n
            length -= n

    def zero_range(self, offset: int, length: int, *, discard: bool) -> None:
        """Make [offset, offset + length) read as zeros (``discard=False``), or let the space go
        (``discard=True``: whole blocks become UNMAPPED; partial ranges are left as they are).

        Whole blocks of dynamic and differencing disks change state (ZERO or UNMAPPED) and lose
        their storage (left as a leak for compaction); fixed disks keep every block in place.
        """
        end = offset + length
        if length <= 0:
            return
        # No session starts (and no GUID changes) unless a block really changes: zeroing what
        # already reads as zero, or discarding a partial block, leaves the file untouched.
        pos = offset
        shift = self._shift
        while pos < end:
            block = pos >> shift
            block_start = block << shift
            block_end = block_start + self.geometry.block_virtual_length(block)
            n = min(end, block_end) - pos
            entry = int(self.payload[block])
            state = entry & BAT_STATE_MASK
            whole = pos == block_start and pos + n == block_end
            if whole and not self.fixed:
                target = _UNMAPPED if discard else _ZERO
                if state != target:
                    self.journal.begin(visible=True)
                    self._set_payload_entry(block, make_entry(target, 0))
                    self._data_written = True
            elif not discard:
                reads_zero = state not in (_FULL, _PARTIAL) and not (self.differencing and state == _NOT_PRESENT)
                if not reads_zero:
                    self._write_zeros_through(pos, n)
            pos += n

    def _write_zeros_through(self, pos: int, n: int) -> None:
        while n > 0:
            k = min(n, len(_ZERO_CHUNK))
            self.write(pos, memoryview(_ZERO_CHUNK)[:k])
            pos += k
            n -= k

    # --- structural edits (resize, set, set-parent, merge, compact) --------------------------------------
    def stage_metadata(self, metadata: Metadata, locator: bytes | None, *, visible: bool,
                       data_write_guid: uuid.UUID | None = None) -> None:
        """Stage a metadata region laid out anew from ``metadata`` (and ``locator``, the parent
        locator item of a differencing disk), keeping every unknown item (VHDX-FORMAT.md 6.3, 7).

        Only the 4 KiB sectors whose bytes change are staged, so the change normally fits one log
        entry and lands atomically at the next ``flush``. ``visible`` says whether a reader sees
        a different disk afterwards (a new size: yes; a new parent path or disk id: no), which
        decides whether the DataWriteGuid changes (5.4).
        """
        region = self.image.region_table.metadata
        current = bytearray(region.length)
        self.journal.read_into(region.file_offset, memoryview(current))
        known = known_entries(self.image.metadata.entries)
        kept = [MetadataItem(e.item_id, bytes(current[e.offset : e.offset + e.length]), e.flags)
                for e in self.image.metadata.entries if e.item_id not in known]
        try:
            new = build_metadata_region(system_items(metadata, locator) + kept, region.length)
        except ValueError:
            raise UnsupportedError("the new metadata items do not fit in the metadata region",
                                   image=self.image.name, structure="metadata region", offset=region.file_offset) from None
        changed = [s for s in range(0, region.length, LOG_SECTOR_SIZE)
                   if new[s : s + LOG_SECTOR_SIZE] != current[s : s + LOG_SECTOR_SIZE]]
        if not changed:
            return
        self.journal.begin(visible=visible, data_write_guid=data_write_guid)
        for s in changed:
            self.journal.stage(region.file_offset + s, new[s : s + LOG_SECTOR_SIZE])
        self.image.metadata = parse_metadata_region(new, region.file_offset)

    def stage_region_table(self, table: RegionTable) -> None:
        """Stage both copies of the region table (6.4: identical, changed only through the log)."""
        raw = build_region_table(table)
        self.journal.begin(visible=False)
        for offset in (REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET):
            self.journal.stage(offset, raw)
        self.image.region_table = table

    def truncate_file(self, size: int) -> None:
        """Shrink the file to ``size`` once nothing referenced lies past it.

        Everything is committed and the log marked empty first (LogGuid = 0): with no log to
        replay, a crash after the truncation cannot meet an entry whose FlushedFileOffset is past
        the new end (VHDX-FORMAT.md 10.3, 10.6 step 6).
        """
        self.flush()
        if self.journal.in_session:
            self.journal.close_session()
        if self.source.size() > size:
            self.source.truncate(size)
            self.source.sync()
            self.journal.stats.syncs += 1
        self.allocator.end = align_up(max(size, self._structures_end()), OBJECT_ALIGNMENT)

    def _structures_end(self) -> int:
        header = self.journal.header
        return max([header.log_offset + header.log_length] + [e.end for e in self.image.region_table.entries])

    # --- durability ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Make every acknowledged write durable: payload synced, metadata committed via the log."""
        self._stage_bat()
        if self.journal.dirty:
            self.journal.commit(last_file_offset=self.allocator.end)
        elif self._data_written:
            self.source.sync()
            self.journal.stats.syncs += 1
        self._data_written = False

    def close(self) -> None:
        try:
            if self.journal.in_session:
                self.flush()
                self.journal.close_session()
        finally:
            super().close()


__all__ = ["WritableEngine", "zero_fill"]
