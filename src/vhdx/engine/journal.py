"""Journal: the only writer of headers and metadata (BAT, sector bitmaps, metadata region, region
tables). Metadata changes are staged in memory as whole 4 KiB sectors and reach the file only
through the log.

Ordering rules (MS-VHDX 2.2.2.1, 2.3; VHDX-FORMAT.md 5.3, 10.6, 12):

* Headers are updated two at a time: the non-current slot first, flushed, then the other slot,
  flushed, so one valid, current header survives any crash.
* Before the first change of a writable session, one header update sets a new FileWriteGuid and a
  new non-zero LogGuid (and a new DataWriteGuid when the change is visible to a reader).
* ``commit``: the file is synced first (payload written by the engine is durable before any
  metadata that points at it), then the log entries are written and synced, then the same sectors
  are written in place and synced. Only then is the journal empty again.
* A new group of entries is written right after the previous one, so it never overwrites the last
  complete sequence; when it does not fit before the end of the ring, the LogGuid is rotated
  first (a header update), which invalidates every older entry, and writing restarts at offset 0.
  So after a crash the log's active sequence is either the newest group (now durable) or the
  previous, already applied one, and replaying it again is harmless.
* ``close_session`` sets LogGuid back to zero: a clean close leaves the log empty.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .._units import align_down, align_up, ceil_div
from ..constants import (
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    LOG_DESCRIPTORS_PER_SECTOR,
    LOG_SECTOR_SIZE,
    OBJECT_ALIGNMENT,
)
from ..model.header import Header, build_header, next_header
from ..model.log import DataWrite, LogScan, ZeroWrite, build_entry
from .source import RandomAccess

HEADER_SLOTS = (HEADER_1_OFFSET, HEADER_2_OFFSET)
ZERO_GUID = uuid.UUID(int=0)


@dataclass
class JournalStats:
    """Counters for benchmarks and reports."""

    commits: int = 0
    entries: int = 0
    log_bytes: int = 0
    syncs: int = 0
    header_updates: int = 0


def entry_sectors(data_count: int, zero_count: int = 0) -> int:
    """Log sectors taken by one entry with that many data and zero descriptors (MS-VHDX 2.3.1)."""
    return ceil_div(data_count + zero_count + 2, LOG_DESCRIPTORS_PER_SECTOR) + data_count


class Journal:
    """Stages metadata sector writes and commits them through the log."""

    def __init__(self, source: RandomAccess, header: Header, header_index: int) -> None:
        self.source = source
        self.header = header
        self.header_index = header_index
        self.stats = JournalStats()
        self._staged: dict[int, bytearray] = {}  # sector offset -> new 4 KiB contents
        self._zeros: list[tuple[int, int]] = []  # zero ranges (4 KiB aligned), applied before sectors
        self._session = False  # FileWriteGuid and LogGuid replaced in this session
        self._data_guid_changed = False
        self._sequence = 0  # last sequence number written in this session's log
        self._write_pos = 0  # where the next entry goes (log offset)

    # --- headers --------------------------------------------------------------------------------
    def update_header(self, **changes: object) -> None:
        """Write ``changes`` into both header slots, non-current first, each flushed (5.3)."""
        first = next_header(self.header, **changes)
        target = 1 - self.header_index
        self.source.pwrite(HEADER_SLOTS[target], build_header(first))
        self.source.sync()
        second = next_header(first)
        self.source.pwrite(HEADER_SLOTS[1 - target], build_header(second))
        self.source.sync()
        self.header, self.header_index = second, 1 - target
        self.stats.header_updates += 1
        self.stats.syncs += 2

    def begin(self, *, visible: bool, data_write_guid: uuid.UUID | None = None) -> None:
        """Prepare for a change: the session's header update (5.4), once; a new DataWriteGuid
        before the first change a reader could see.

        ``data_write_guid`` picks that new DataWriteGuid instead of a random one: a merge records
        it in the children's ``parent_linkage2`` first, so they stay linked whatever happens
        (VHDX-FORMAT.md 7.6).
        """
        if not self._session:
            changes: dict[str, object] = {"file_write_guid": uuid.uuid4(), "log_guid": uuid.uuid4()}
            if visible:
                changes["data_write_guid"] = data_write_guid or uuid.uuid4()
                self._data_guid_changed = True
            self.update_header(**changes)
            self._session = True
            self._sequence = 0
            self._write_pos = 0
        elif visible and not self._data_guid_changed:
            self.update_header(data_write_guid=data_write_guid or uuid.uuid4())
            self._data_guid_changed = True

    @property
    def in_session(self) -> bool:
        return self._session

    def close_session(self) -> None:
        """Mark the log empty after everything was committed (LogGuid = 0)."""
        if self._staged or self._zeros:
            raise RuntimeError("close_session with uncommitted metadata")
        if self._session and self.header.log_guid != ZERO_GUID:
            self.update_header(log_guid=ZERO_GUID)
        self._session = False
        self._data_guid_changed = False

    # --- staging ---------------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self._staged or self._zeros)

    def staged_log_sectors(self, extra_data: int = 0, extra_zero: int = 0) -> int:
        """Log sectors one entry holding everything staged (plus ``extra_data`` data sectors and
        ``extra_zero`` zero ranges) would take. An edit that must land atomically checks this
        against ``header.log_length // LOG_SECTOR_SIZE``: only a single entry is all-or-nothing."""
        return entry_sectors(len(self._staged) + extra_data, len(self._zeros) + extra_zero)

    def discard(self) -> None:
        """Drop every staged change (an edit that finds it cannot land atomically gives up)."""
        self._staged.clear()
        self._zeros.clear()

    def _sector(self, sector_offset: int) -> bytearray:
        sector = self._staged.get(sector_offset)
        if sector is None:
            sector = bytearray(LOG_SECTOR_SIZE)
            self.read_into(sector_offset, memoryview(sector))
            self._staged[sector_offset] = sector
        return sector

    def stage(self, file_offset: int, data: bytes | bytearray | memoryview) -> None:
        """Stage ``data`` for ``file_offset`` (any alignment; whole sectors are logged)."""
        view = memoryview(data)
        pos = file_offset
        end = file_offset + len(view)
        while pos < end:
            sector_offset = align_down(pos, LOG_SECTOR_SIZE)
            n = min(end, sector_offset + LOG_SECTOR_SIZE) - pos
            at = pos - sector_offset
            if n == LOG_SECTOR_SIZE:
                # A whole sector replaces what was there: no need to read it first.
                self._staged[sector_offset] = bytearray(view[pos - file_offset : pos - file_offset + n])
            else:
                sector = self._sector(sector_offset)
                sector[at : at + n] = view[pos - file_offset : pos - file_offset + n]
            pos += n

    def stage_zero(self, file_offset: int, length: int) -> None:
        """Stage zeros over a 4 KiB-aligned range (a zero descriptor: no data sectors)."""
        if file_offset % LOG_SECTOR_SIZE or length % LOG_SECTOR_SIZE:
            raise ValueError("zero ranges are 4 KiB aligned")
        end = file_offset + length
        for sector_offset in [s for s in self._staged if file_offset <= s < end]:
            del self._staged[sector_offset]
        self._zeros.append((file_offset, length))

    def read_into(self, file_offset: int, view: memoryview) -> int:
        """Read file bytes as they will be once staged metadata is committed."""
        got = self.source.readinto(file_offset, view)
        if got < len(view):
            view[got:] = bytes(len(view) - got)
        end = file_offset + len(view)
        for z_start, z_len in self._zeros:
            lo, hi = max(z_start, file_offset), min(z_start + z_len, end)
            if lo < hi:
                view[lo - file_offset : hi - file_offset] = bytes(hi - lo)
        if self._staged:
            first = align_down(file_offset, LOG_SECTOR_SIZE)
            for sector_offset in range(first, end, LOG_SECTOR_SIZE):
                sector = self._staged.get(sector_offset)
                if sector is None:
                    continue
                lo, hi = max(sector_offset, file_offset), min(sector_offset + LOG_SECTOR_SIZE, end)
                view[lo - file_offset : hi - file_offset] = sector[lo - sector_offset : hi - sector_offset]
        return len(view)

    # --- commit ------------------------------------------------------------------------------------
    def commit(self, *, last_file_offset: int, flushed_file_offset: int | None = None) -> None:
        """Make every staged change durable through the log, then apply it in place (10.6).

        ``flushed_file_offset`` (default: the current file size) is what the entries record as
        durable. To shrink the file, commit with the target size here (and as
        ``last_file_offset``) before truncating (VHDX-FORMAT.md 10.6 step 6): a replay after a
        crash then neither fails on the shorter file nor extends it again.
        """
        if not self.dirty:
            return
        assert self._session, "begin() must precede staged changes"
        self.source.sync()  # payload first: nothing may point at data that is not durable
        self.stats.syncs += 1
        writes: list[DataWrite | ZeroWrite] = [ZeroWrite(o, n) for o, n in self._zeros]
        writes += [DataWrite(o, bytes(s)) for o, s in sorted(self._staged.items())]
        capacity = self.header.log_length // LOG_SECTOR_SIZE
        durable_size = align_down(self.source.size() if flushed_file_offset is None else flushed_file_offset,
                                  OBJECT_ALIGNMENT)
        last = max(align_up(last_file_offset, OBJECT_ALIGNMENT), durable_size)
        # Split into entries that fit the log, then into groups written and applied together.
        entries: list[tuple[list[DataWrite | ZeroWrite], int]] = []  # (writes, sectors)
        current: list[DataWrite | ZeroWrite] = []
        data = zero = 0
        for w in writes:
            is_data = isinstance(w, DataWrite)
            if current and entry_sectors(data + is_data, zero + (not is_data)) > capacity:
                entries.append((current, entry_sectors(data, zero)))
                current, data, zero = [], 0, 0
            current.append(w)
            data += is_data
            zero += not is_data
        if current:
            entries.append((current, entry_sectors(data, zero)))
        group: list[list[DataWrite | ZeroWrite]] = []
        group_sectors = 0
        for entry, size in entries:
            if group and group_sectors + size > capacity:
                self._write_group(group, group_sectors, durable_size, last)
                group, group_sectors = [], 0
            group.append(entry)
            group_sectors += size
        if group:
            self._write_group(group, group_sectors, durable_size, last)
        self._staged.clear()
        self._zeros.clear()
        self.stats.commits += 1

    def _write_group(self, group: list[list[DataWrite | ZeroWrite]], sectors: int, durable_size: int, last: int) -> None:
        log_length = self.header.log_length
        total = sectors * LOG_SECTOR_SIZE
        start = self._write_pos
        if start + total > log_length:
            # Entries are never wrapped around the end of the ring: when the group does not fit
            # before the end, a new LogGuid invalidates every older entry and writing starts over
            # at offset 0. The format allows wrapping, but QEMU 7.2's log scan never ends on a
            # ring filled with one GUID's entries but for a single stale sector (it comes back to
            # where it started); keeping each GUID's entries in one straight run avoids that.
            self.update_header(log_guid=uuid.uuid4())
            start = 0
        pos = start
        for entry_writes in group:
            self._sequence += 1
            raw = build_entry(log_guid=self.header.log_guid, sequence_number=self._sequence, tail=start,
                              flushed_file_offset=durable_size, last_file_offset=last, writes=entry_writes)
            self.source.pwrite(self.header.log_offset + pos, raw)
            pos += len(raw)
            self.stats.entries += 1
            self.stats.log_bytes += len(raw)
        self.source.sync()
        for entry_writes in group:
            for w in entry_writes:
                if isinstance(w, ZeroWrite):
                    _write_zeros(self.source, w.file_offset, w.length)
                else:
                    self.source.pwrite(w.file_offset, w.data)
        self.source.sync()
        self.stats.syncs += 2
        self._write_pos = pos


def _write_zeros(source: RandomAccess, offset: int, length: int) -> None:
    chunk = bytes(min(length, OBJECT_ALIGNMENT))
    pos = offset
    end = offset + length
    while pos < end:
        n = min(len(chunk), end - pos)
        source.pwrite(pos, chunk[:n])
        pos += n


def replay_to_disk(source: RandomAccess, header: Header, header_index: int, scan: LogScan) -> tuple[Header, int]:
    """Replay the active sequence in place (MS-VHDX 2.3.3; VHDX-FORMAT.md 10.4) and mark the log
    empty. Returns the new current header and its slot. Replay is idempotent, so a crash in the
    middle of it is repaired by replaying again."""
    journal = Journal(source, header, header_index)
    journal.update_header(file_write_guid=uuid.uuid4())
    head = scan.head
    if head is not None:
        for entry in scan.active:
            for w in entry.writes:
                if isinstance(w, ZeroWrite):
                    # Bytes past the end of the file already read as zero (and stay so when the
                    # file is extended below): a zero descriptor claiming terabytes writes only
                    # what lies inside the file.
                    _write_zeros(source, w.file_offset, max(0, min(w.length, source.size() - w.file_offset)))
                else:
                    source.pwrite(w.file_offset, w.data)
        if source.size() < head.last_file_offset:
            source.truncate(head.last_file_offset)
        source.sync()
    journal.update_header(log_guid=ZERO_GUID)
    return journal.header, journal.header_index
