"""Log model: find the active sequence in a log region and turn it into replay operations; build
new log entries. Pure: takes and returns bytes.

References: MS-VHDX 2.3; VHDX-FORMAT.md 10.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np

from .. import checksum
from .._units import ceil_div
from ..constants import (
    LOG_DATA_DESCRIPTOR_SIGNATURE,
    LOG_DATA_LEADING_SIZE,
    LOG_DATA_SECTOR_SIGNATURE,
    LOG_DATA_TRAILING_SIZE,
    LOG_DESCRIPTORS_PER_SECTOR,
    LOG_ENTRY_HEADER_SIZE,
    LOG_ENTRY_SIGNATURE,
    LOG_EXTRA_CHECKSUM_FACTOR,
    LOG_PROTECTED_PREFIX,
    LOG_SECTOR_SIZE,
    LOG_ZERO_DESCRIPTOR_SIGNATURE,
    OBJECT_ALIGNMENT,
)
from ..errors import CorruptStructureError, FormatError, LogReplayError
from ..structs.log import (
    DATA_DESCRIPTOR,
    DATA_DESCRIPTOR_LEADING_OFFSET,
    DATA_DESCRIPTOR_TRAILING_OFFSET,
    DATA_SECTOR,
    DATA_SECTOR_DATA_OFFSET,
    DATA_SECTOR_SEQUENCE_HIGH_OFFSET,
    DATA_SECTOR_SEQUENCE_LOW_OFFSET,
    DESCRIPTOR_DTYPE,
    DESCRIPTOR_SIZE,
    LOG_ENTRY_CHECKSUM_OFFSET,
    LOG_ENTRY_HEADER,
    ZERO_DESCRIPTOR,
)
from ._decode import build_struct, parse_struct


@dataclass(frozen=True, slots=True)
class DataWrite:
    """Write ``data`` (one 4 KiB sector) at ``file_offset``."""

    file_offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ZeroWrite:
    """Write ``length`` zero bytes at ``file_offset``."""

    file_offset: int
    length: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A valid log entry (MS-VHDX 2.3.1.1) and the writes it carries."""

    log_offset: int  # offset inside the log
    length: int
    tail: int
    sequence_number: int
    log_guid: uuid.UUID
    flushed_file_offset: int
    last_file_offset: int
    writes: tuple[DataWrite | ZeroWrite, ...]


@dataclass(frozen=True, slots=True)
class LogScan:
    """What the log region holds."""

    entries: dict[int, LogEntry]  # every valid entry for the log GUID, by log offset
    active: tuple[LogEntry, ...]  # the active sequence, oldest first (empty: nothing to replay)

    @property
    def head(self) -> LogEntry | None:
        return self.active[-1] if self.active else None


def _circular(log: bytes | memoryview, start: int, length: int) -> bytes:
    end = start + length
    if end <= len(log):
        return bytes(log[start:end])
    return bytes(log[start:]) + bytes(log[: end - len(log)])


class ScanBudget:
    """How many extra (past the descriptors' own) entry sectors a log scan may still checksum.

    Everything else a candidate entry is made of is checked before its checksum, and those parts
    cannot overlap between candidates (each data sector starts with ``data``, each header with
    ``loge``), so a scan costs time linear in the log; only the extra sectors MS-VHDX tolerates
    could be claimed by every candidate at once (VHDX-FORMAT.md 10.2 item 3).
    """

    def __init__(self, log_length: int, file_log_offset: int = 0) -> None:
        self.left = LOG_EXTRA_CHECKSUM_FACTOR * log_length
        self.file_log_offset = file_log_offset

    def spend(self, length: int, log_offset: int) -> None:
        self.left -= length
        if self.left < 0:
            raise LogReplayError(
                f"log entries claim more than {LOG_EXTRA_CHECKSUM_FACTOR} times the log's length in sectors past "
                "their descriptors (overlapping hostile entries)", structure="log entry",
                offset=self.file_log_offset + log_offset)


def parse_entry(log: bytes | memoryview, log_offset: int, log_guid: uuid.UUID | None,
                file_log_offset: int = 0, budget: ScanBudget | None = None) -> LogEntry | None:
    """Return the entry at ``log_offset`` if it is valid for ``log_guid`` (VHDX-FORMAT.md 10.2), else None.
    ``log_guid=None`` accepts an entry of any LogGuid (stale entries of earlier sessions, for forensics).

    The descriptors and the signature and sequence number of every data sector are checked before
    the checksum, which is the only part that reads the whole entry; ``budget`` (one per scan)
    bounds the checksummed sectors that are neither.

    Raises:
        LogReplayError: ``budget`` ran out.
    """
    log_length = len(log)
    raw_head = bytes(log[log_offset : log_offset + LOG_ENTRY_HEADER_SIZE])
    if raw_head[:4] != LOG_ENTRY_SIGNATURE:
        return None
    try:
        h = parse_struct(LOG_ENTRY_HEADER, raw_head, structure="log entry", offset=file_log_offset + log_offset)
    except FormatError:
        return None
    if (h.entry_length == 0 or h.entry_length % LOG_SECTOR_SIZE or h.entry_length > log_length
            or h.tail % LOG_SECTOR_SIZE or h.tail >= log_length or h.sequence_number == 0
            or (log_guid is not None and h.log_guid != log_guid)):
        return None
    descriptor_sectors = ceil_div(h.descriptor_count + 2, LOG_DESCRIPTORS_PER_SECTOR)
    if descriptor_sectors * LOG_SECTOR_SIZE > h.entry_length:
        return None
    head = _circular(log, log_offset, descriptor_sectors * LOG_SECTOR_SIZE)
    d = np.frombuffer(head, dtype=DESCRIPTOR_DTYPE, count=h.descriptor_count, offset=LOG_ENTRY_HEADER_SIZE)
    is_zero = d["signature"] == LOG_ZERO_DESCRIPTOR_SIGNATURE
    is_data = d["signature"] == LOG_DATA_DESCRIPTOR_SIGNATURE
    if (not np.all(is_zero | is_data) or np.any(d["sequence_number"] != h.sequence_number)
            or np.any(d["file_offset"] % LOG_SECTOR_SIZE) or np.any(d["length"][is_zero] % LOG_SECTOR_SIZE)):
        return None
    data_count = int(np.count_nonzero(is_data))
    structural = (descriptor_sectors + data_count) * LOG_SECTOR_SIZE
    if structural > h.entry_length:
        return None
    sectors: list[int] = []  # log offset of each data sector, in descriptor order
    for i in range(data_count):
        at = (log_offset + structural - (data_count - i) * LOG_SECTOR_SIZE) % log_length
        sector = log[at : at + LOG_SECTOR_SIZE]
        high = int.from_bytes(sector[DATA_SECTOR_SEQUENCE_HIGH_OFFSET : DATA_SECTOR_SEQUENCE_HIGH_OFFSET + 4], "little")
        low = int.from_bytes(sector[DATA_SECTOR_SEQUENCE_LOW_OFFSET : DATA_SECTOR_SEQUENCE_LOW_OFFSET + 4], "little")
        if bytes(sector[:4]) != LOG_DATA_SECTOR_SIGNATURE or (high << 32) | low != h.sequence_number:
            return None
        sectors.append(at)
    if budget is not None and h.entry_length > structural:
        budget.spend(h.entry_length - structural, log_offset)
    raw = _circular(log, log_offset, h.entry_length)
    if not checksum.verify(raw, LOG_ENTRY_CHECKSUM_OFFSET):
        return None
    writes: list[DataWrite | ZeroWrite] = []
    data_index = 0
    for i in range(h.descriptor_count):
        if is_zero[i]:
            writes.append(ZeroWrite(int(d["file_offset"][i]), int(d["length"][i])))
            continue
        at = LOG_ENTRY_HEADER_SIZE + i * DESCRIPTOR_SIZE
        s = sectors[data_index]
        data_index += 1
        writes.append(DataWrite(
            int(d["file_offset"][i]),
            head[at + DATA_DESCRIPTOR_LEADING_OFFSET : at + DATA_DESCRIPTOR_LEADING_OFFSET + LOG_DATA_LEADING_SIZE]
            + bytes(log[s + DATA_SECTOR_DATA_OFFSET : s + DATA_SECTOR_SEQUENCE_LOW_OFFSET])
            + head[at + DATA_DESCRIPTOR_TRAILING_OFFSET : at + DATA_DESCRIPTOR_TRAILING_OFFSET + LOG_DATA_TRAILING_SIZE]))
    return LogEntry(log_offset, h.entry_length, h.tail, h.sequence_number, h.log_guid,
                    h.flushed_file_offset, h.last_file_offset, tuple(writes))


def scan_log(log: bytes | memoryview, log_guid: uuid.UUID, file_log_offset: int = 0) -> LogScan:
    """Find every valid entry and the active sequence (VHDX-FORMAT.md 10.3).

    Candidate entries are found in bulk (signature at a 4 KiB boundary), so the scan is linear in
    the log length. Sequence numbers strictly increase along a chain, so chains cannot loop.
    """
    log_length = len(log)
    if log_length == 0 or log_length % LOG_SECTOR_SIZE:
        return LogScan({}, ())
    sectors = np.frombuffer(log, dtype="<u4").reshape(-1, LOG_SECTOR_SIZE // 4)
    signature = int.from_bytes(LOG_ENTRY_SIGNATURE, "little")
    starts = (np.flatnonzero(sectors[:, 0] == signature) * LOG_SECTOR_SIZE).tolist()
    entries: dict[int, LogEntry] = {}
    budget = ScanBudget(log_length, file_log_offset)
    for start in starts:
        entry = parse_entry(log, start, log_guid, file_log_offset, budget)
        if entry is not None:
            entries[start] = entry

    def successor(e: LogEntry) -> LogEntry | None:
        nxt = entries.get((e.log_offset + e.length) % log_length)
        return nxt if nxt is not None and nxt.sequence_number == e.sequence_number + 1 else None

    # Follow successor links once for every entry (memoised), so the scan stays linear. A sequence
    # is complete when its head's Tail names an entry whose links lead to that head.
    head_of: dict[int, int] = {}
    for start in entries:
        path = []
        cur: LogEntry | None = entries[start]
        while cur is not None and cur.log_offset not in head_of:
            path.append(cur.log_offset)
            nxt = successor(cur)
            if nxt is None:
                head_of[cur.log_offset] = cur.log_offset
                path.pop()
                break
            cur = nxt
        final = head_of[cur.log_offset] if cur is not None else head_of[path[-1]]
        for off in path:
            head_of[off] = final
    best_head: LogEntry | None = None
    for off, head_off in head_of.items():
        if off != head_off:
            continue
        head = entries[off]
        if head.tail in entries and head_of.get(head.tail) == off:
            if best_head is None or head.sequence_number > best_head.sequence_number:
                best_head = head
    best: tuple[LogEntry, ...] = ()
    if best_head is not None:
        chain = [entries[best_head.tail]]
        while chain[-1] is not best_head:
            nxt = successor(chain[-1])
            assert nxt is not None
            chain.append(nxt)
        best = tuple(chain)
    return LogScan(entries, best)


def all_entries(log: bytes | memoryview, file_log_offset: int = 0) -> list[LogEntry]:
    """Every valid entry in the log region whatever its LogGuid, by log offset (forensics: the
    log keeps entries of earlier sessions until they are overwritten)."""
    if len(log) == 0 or len(log) % LOG_SECTOR_SIZE:
        return []
    sectors = np.frombuffer(log, dtype="<u4").reshape(-1, LOG_SECTOR_SIZE // 4)
    signature = int.from_bytes(LOG_ENTRY_SIGNATURE, "little")
    found = []
    budget = ScanBudget(len(log), file_log_offset)
    for start in (np.flatnonzero(sectors[:, 0] == signature) * LOG_SECTOR_SIZE).tolist():
        entry = parse_entry(log, start, None, file_log_offset, budget)
        if entry is not None:
            found.append(entry)
    return found


def validate_active(scan: LogScan, file_size: int, log_offset: int, log_length: int, file_log_offset: int) -> None:
    """Check the replay preconditions (VHDX-FORMAT.md 10.2 item 6, 10.3).

    Raises:
        TruncatedError: the file is shorter than the head's FlushedFileOffset.
        CorruptStructureError: a write targets the file identifier, the headers or the log itself.
    """
    from ..errors import TruncatedError

    head = scan.head
    if head is None:
        return
    if file_size < head.flushed_file_offset:
        raise TruncatedError(f"file is 0x{file_size:x} bytes but the log says 0x{head.flushed_file_offset:x} were durable",
                             structure="log entry", offset=file_log_offset + head.log_offset)
    for entry in scan.active:
        for w in entry.writes:
            length = w.length if isinstance(w, ZeroWrite) else LOG_SECTOR_SIZE
            end = w.file_offset + length
            if w.file_offset < LOG_PROTECTED_PREFIX or (w.file_offset < log_offset + log_length and end > log_offset):
                raise CorruptStructureError(
                    f"log entry writes 0x{w.file_offset:x}-0x{end:x}, over the headers or the log itself",
                    structure="log entry", offset=file_log_offset + entry.log_offset)


def build_entry(
    *,
    log_guid: uuid.UUID,
    sequence_number: int,
    tail: int,
    flushed_file_offset: int,
    last_file_offset: int,
    writes: list[DataWrite | ZeroWrite],
) -> bytes:
    """Return the bytes of one log entry carrying ``writes`` (MS-VHDX 2.3.1)."""
    data_writes = [w for w in writes if isinstance(w, DataWrite)]
    descriptor_sectors = ceil_div(len(writes) + 2, LOG_DESCRIPTORS_PER_SECTOR)
    length = LOG_SECTOR_SIZE * (descriptor_sectors + len(data_writes))
    buf = bytearray(length)
    buf[:LOG_ENTRY_HEADER_SIZE] = build_struct(LOG_ENTRY_HEADER, {
        "checksum": 0, "entry_length": length, "tail": tail, "sequence_number": sequence_number,
        "descriptor_count": len(writes), "reserved": 0, "log_guid": log_guid,
        "flushed_file_offset": flushed_file_offset, "last_file_offset": last_file_offset})
    data_at = descriptor_sectors * LOG_SECTOR_SIZE
    for i, w in enumerate(writes):
        at = LOG_ENTRY_HEADER_SIZE + i * DESCRIPTOR_SIZE
        if isinstance(w, ZeroWrite):
            buf[at : at + DESCRIPTOR_SIZE] = build_struct(ZERO_DESCRIPTOR, {
                "reserved": 0, "zero_length": w.length, "file_offset": w.file_offset, "sequence_number": sequence_number})
        else:
            if len(w.data) != LOG_SECTOR_SIZE:
                raise ValueError("a data write carries exactly one 4 KiB sector")
            buf[at : at + DESCRIPTOR_SIZE] = build_struct(DATA_DESCRIPTOR, {
                "trailing_bytes": w.data[-LOG_DATA_TRAILING_SIZE:], "leading_bytes": w.data[:LOG_DATA_LEADING_SIZE],
                "file_offset": w.file_offset, "sequence_number": sequence_number})
            buf[data_at : data_at + LOG_SECTOR_SIZE] = build_struct(DATA_SECTOR, {
                "sequence_high": sequence_number >> 32,
                "data": w.data[LOG_DATA_LEADING_SIZE:-LOG_DATA_TRAILING_SIZE],
                "sequence_low": sequence_number & 0xFFFFFFFF})
            data_at += LOG_SECTOR_SIZE
    checksum.seal(buf, LOG_ENTRY_CHECKSUM_OFFSET)
    return bytes(buf)


def round_file_offset(value: int) -> int:
    """Round a file size up to the 1 MiB granularity that FlushedFileOffset/LastFileOffset use."""
    return ceil_div(value, OBJECT_ALIGNMENT) * OBJECT_ALIGNMENT
