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
    LOG_PROTECTED_PREFIX,
    LOG_SECTOR_SIZE,
    LOG_ZERO_DESCRIPTOR_SIGNATURE,
    OBJECT_ALIGNMENT,
)
from ..errors import CorruptStructureError, FormatError
from ..structs.log import (
    DATA_DESCRIPTOR,
    DATA_SECTOR,
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


def parse_entry(log: bytes | memoryview, log_offset: int, log_guid: uuid.UUID, file_log_offset: int = 0) -> LogEntry | None:
    """Return the entry at ``log_offset`` if it is valid for ``log_guid`` (VHDX-FORMAT.md 10.2), else None."""
    log_length = len(log)
    raw_head = bytes(log[log_offset : log_offset + LOG_ENTRY_HEADER_SIZE])
    if raw_head[:4] != LOG_ENTRY_SIGNATURE:
        return None
    try:
        h = parse_struct(LOG_ENTRY_HEADER, raw_head, structure="log entry", offset=file_log_offset + log_offset)
    except FormatError:
        return None
    if (h.entry_length == 0 or h.entry_length % LOG_SECTOR_SIZE or h.entry_length > log_length
            or h.tail % LOG_SECTOR_SIZE or h.tail >= log_length or h.sequence_number == 0 or h.log_guid != log_guid):
        return None
    descriptor_sectors = ceil_div(h.descriptor_count + 2, LOG_DESCRIPTORS_PER_SECTOR)
    if descriptor_sectors * LOG_SECTOR_SIZE > h.entry_length:
        return None
    raw = _circular(log, log_offset, h.entry_length)
    if not checksum.verify(raw, LOG_ENTRY_CHECKSUM_OFFSET):
        return None
    writes: list[DataWrite | ZeroWrite] = []
    data_index = descriptor_sectors
    for i in range(h.descriptor_count):
        at = LOG_ENTRY_HEADER_SIZE + i * DESCRIPTOR_SIZE
        d = raw[at : at + DESCRIPTOR_SIZE]
        sig = d[:4]
        if sig == LOG_ZERO_DESCRIPTOR_SIGNATURE:
            z = ZERO_DESCRIPTOR.parse(d)
            if z.sequence_number != h.sequence_number or z.file_offset % LOG_SECTOR_SIZE or z.zero_length % LOG_SECTOR_SIZE:
                return None
            writes.append(ZeroWrite(z.file_offset, z.zero_length))
        elif sig == LOG_DATA_DESCRIPTOR_SIGNATURE:
            dd = DATA_DESCRIPTOR.parse(d)
            if dd.sequence_number != h.sequence_number or dd.file_offset % LOG_SECTOR_SIZE:
                return None
            if (data_index + 1) * LOG_SECTOR_SIZE > h.entry_length:
                return None
            sector = raw[data_index * LOG_SECTOR_SIZE : (data_index + 1) * LOG_SECTOR_SIZE]
            data_index += 1
            if sector[:4] != LOG_DATA_SECTOR_SIGNATURE:
                return None
            s = DATA_SECTOR.parse(sector)
            if (s.sequence_high << 32) | s.sequence_low != h.sequence_number:
                return None
            writes.append(DataWrite(dd.file_offset, dd.leading_bytes + s.data + dd.trailing_bytes))
        else:
            return None
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
    for start in starts:
        entry = parse_entry(log, start, log_guid, file_log_offset)
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
