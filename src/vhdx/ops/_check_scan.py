"""The read-only half of ``vhdx.ops.check``: examine every structure of one VHDX file on its own.

Nothing here relies on the file being openable. Each structure is decoded from raw bytes with the
model layer and judged independently, so that damage to one (a header, a region table copy, a BAT
entry) is reported and the others are still checked. When the log holds a replayable sequence,
the structures after it are checked as they will be once it is replayed (an in-memory overlay, as
a read-only open does); the file itself is never written here.

Each finding carries a ``fix`` tag naming the repair step that can fix it (``None``: not
repairable here); ``ops/check.py`` runs those steps.

References: MS-VHDX 2.1-2.6; VHDX-FORMAT.md 1.2, 4-10.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from .. import checksum
from .._units import align_up, ceil_div, format_size
from ..constants import (
    BAT_ENTRY_SIZE,
    BAT_FILE_OFFSET_MASK,
    BAT_STATE_MASK,
    FILE_IDENTIFIER_OFFSET,
    FILE_IDENTIFIER_SIGNATURE,
    FILE_IDENTIFIER_SIZE,
    FILE_PARAMETERS_GUID,
    FILE_PARAMETERS_HAS_PARENT,
    FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED,
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    HEADER_SECTION_SIZE,
    HEADER_SIZE,
    LOG_ENTRY_SIGNATURE,
    LOG_SECTOR_SIZE,
    MAX_CHAIN_DEPTH,
    MAX_FILE_SIZE,
    MAX_LOG_LENGTH,
    MAX_REGION_ENTRIES,
    METADATA_TABLE_SIZE,
    OBJECT_ALIGNMENT,
    PARENT_LOCATOR_GUID,
    REGION_REQUIRED_FLAG,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    REGION_TABLE_SIGNATURE,
    REGION_TABLE_SIZE,
    SECTOR_BITMAP_BLOCK_SIZE,
    PayloadBlockState,
    SectorBitmapState,
)
from ..engine.source import OverlaySource, RandomAccess, RemoteSource, is_url, open_source, source_identity
from ..errors import FormatError, UnsupportedError, VhdxError
from ..model._decode import parse_struct
from ..model.geometry import DiskGeometry
from ..model.header import Header, parse_header, validate_header
from ..model.log import LogScan, ZeroWrite, scan_log, validate_active
from ..model.metadata import Metadata, MetadataEntry, decode_metadata, known_entries, parse_metadata_table
from ..model.parent_locator import candidate_paths, candidate_urls
from ..model.region_table import KNOWN_REGIONS, RegionTable, RegionTableEntry
from ..structs.file_identifier import FILE_IDENTIFIER
from ..structs.metadata import METADATA_TABLE_HEADER
from ..structs.region_table import (
    REGION_TABLE,
    REGION_TABLE_CHECKSUM_OFFSET,
    REGION_TABLE_ENTRY_SIZE,
    REGION_TABLE_HEADER,
    REGION_TABLE_HEADER_SIZE,
)
from .progress import ProgressCallback, report

CORRUPTION = "corruption"
LEAK = "leak"
WARNING = "warning"
INFO = "info"

# Repair steps (see ops/check.py), in the order they run.
FIX_LOG = "log"
FIX_HEADER = "header"
FIX_REGION_TABLE = "region-table"
FIX_EXTEND = "extend"
FIX_BAT = "bat"
FIX_TRUNCATE = "truncate"
FIX_IDENTIFIER = "file-identifier"
FIX_HEADER_TIE = "header-tie"

HEADER_OFFSETS = (HEADER_1_OFFSET, HEADER_2_OFFSET)
TABLE_OFFSETS = (REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET)
# Findings of one kind listed one by one before the rest are summed up in one line (a BAT of
# millions of entries can be wholly wrong).
LIST_LIMIT = 20
_READ_CHUNK = OBJECT_ALIGNMENT
_PRESENT = (int(PayloadBlockState.FULLY_PRESENT), int(PayloadBlockState.PARTIALLY_PRESENT))
_KNOWN_PAYLOAD_STATES = [int(s) for s in PayloadBlockState]
_BAT_RESERVED_BITS = ~np.uint64(BAT_FILE_OFFSET_MASK | BAT_STATE_MASK)
_PHASES = 9


@dataclass(frozen=True, slots=True)
class RawFinding:
    """One problem found, before the repair bookkeeping of ``ops/check.py``."""

    structure: str
    file_offset: int | None
    severity: str
    message: str
    count: int = 1
    fix: str | None = None

    @property
    def key(self) -> tuple[str, int | None, str, str]:
        return (self.structure, self.file_offset, self.severity, self.message)


@dataclass(frozen=True, slots=True)
class BlockObject:
    """A payload or sector bitmap block as the BAT places it in the file."""

    kind: str  # "payload" or "bitmap"
    index: int  # block number (payload) or chunk number (bitmap)
    file_offset: int
    length: int

    @property
    def end(self) -> int:
        return self.file_offset + self.length

    @property
    def name(self) -> str:
        return f"{'payload block' if self.kind == 'payload' else 'sector bitmap block'} {self.index}"


def _payload_bat_indices(g: DiskGeometry, blocks: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``g.payload_bat_index`` of each of ``blocks`` (VHDX-FORMAT.md 8.4)."""
    return blocks + blocks // g.chunk_ratio


def _bitmap_bat_indices(g: DiskGeometry, chunks: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """``g.bitmap_bat_index`` of each of ``chunks`` (VHDX-FORMAT.md 8.4)."""
    return chunks * (g.chunk_ratio + 1) + g.chunk_ratio


class _Blocks:
    """The payload and sector bitmap blocks the BAT places in the file, as arrays: the sector
    bitmap blocks first (``bitmaps`` of them, chunk order), then the payload blocks (block
    order). ``starts`` are their file offsets (inside the file, so they fit an int64). Python
    objects (``BlockObject``) are made only for the few that a finding names."""

    def __init__(self, g: DiskGeometry, bitmap: npt.NDArray[np.int64], bitmap_offsets: npt.NDArray[np.uint64],
                 payload: npt.NDArray[np.int64], payload_offsets: npt.NDArray[np.uint64]) -> None:
        self.g = g
        self.bitmap = bitmap
        self.payload = payload
        self.bitmaps = len(bitmap)
        self.starts = np.concatenate((bitmap_offsets[bitmap], payload_offsets[payload])).view(np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    def ends(self, positions: npt.NDArray[np.intp] | None = None) -> npt.NDArray[np.int64]:
        """The ends of the blocks at ``positions`` (all when None), as a new array."""
        if positions is None:
            out = self.starts + self.g.block_size
            out[: self.bitmaps] += SECTOR_BITMAP_BLOCK_SIZE - self.g.block_size
            return out
        out = self.starts[positions]
        out += np.where(positions < self.bitmaps, SECTOR_BITMAP_BLOCK_SIZE, self.g.block_size)
        return out

    def end(self, i: int) -> int:
        return int(self.starts[i]) + (SECTOR_BITMAP_BLOCK_SIZE if i < self.bitmaps else self.g.block_size)

    def listing_order(self, positions: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """``positions`` (ascending) with the payload blocks first, as findings list them."""
        first_payload = np.searchsorted(positions, self.bitmaps)
        return np.concatenate((positions[first_payload:], positions[:first_payload]))

    def block(self, i: int) -> BlockObject:
        if i < self.bitmaps:
            return BlockObject("bitmap", int(self.bitmap[i]), int(self.starts[i]), SECTOR_BITMAP_BLOCK_SIZE)
        return BlockObject("payload", int(self.payload[i - self.bitmaps]), int(self.starts[i]), self.g.block_size)

    def name(self, i: int) -> str:
        return self.block(i).name

    def bat_index(self, i: int) -> int:
        if i < self.bitmaps:
            return self.g.bitmap_bat_index(int(self.bitmap[i]))
        return self.g.payload_bat_index(int(self.payload[i - self.bitmaps]))


@dataclass
class Scan:
    """Everything the scan learnt about one file (the repair steps act on it)."""

    path: str
    file_size: int = 0  # the file as it is
    size: int = 0  # the file as it will be once a pending log is replayed
    findings: list[RawFinding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # why the check could not complete
    header_raw: list[bytes] = field(default_factory=list)
    headers: list[Header | None] = field(default_factory=list)
    current: Header | None = None
    current_index: int = 0
    # Two valid headers with equal sequence numbers and different contents (5.2): the one a
    # repair keeps, when one can be chosen safely.
    tie_index: int | None = None
    # The creator string of a file identifier whose signature is damaged, when it is still
    # readable (None: a repair writes a default one).
    creator: str | None = None
    log_scan: LogScan | None = None
    log_status: str = "empty"  # empty, pending, no-sequence, unreplayable, unusable
    log_usable: bool = False  # a repair may write through the log
    table_raw: list[bytes] = field(default_factory=list)
    tables: list[RegionTable | None] = field(default_factory=list)
    table: RegionTable | None = None
    table_index: int = 0
    metadata: Metadata | None = None
    geometry: DiskGeometry | None = None
    bat_offset: int = 0
    bat: npt.NDArray[np.uint64] | None = None
    # BAT repairs: entry index -> new value (detach), and blocks to move to new space.
    detach: dict[int, int] = field(default_factory=dict)
    detached_blocks: set[int] = field(default_factory=set)
    relocate: list[BlockObject] = field(default_factory=list)
    used_end: int = 0  # end of the last structure the file needs
    extend_to: int = 0  # the file must be this long for every block that starts in it to end in it
    leak_checked: bool = False
    total_blocks: int | None = None
    allocated_blocks: int | None = None
    fragmented_blocks: int | None = None

    def add(self, structure: str, offset: int | None, severity: str, message: str, *, count: int = 1,
            fix: str | None = None) -> None:
        self.findings.append(RawFinding(structure, offset, severity, message, count, fix))

    def add_many(self, items: Sequence[tuple[str, int | None, str]], severity: str, summary: str, *,
                 total: int | None = None, fix: str | None = None) -> None:
        """Add ``items`` (structure, offset, message) one by one up to LIST_LIMIT, then one line
        ``summary`` (with ``{n}`` for the rest's count) counting the others. ``total`` is the
        number of problems when ``items`` lists only the first ones."""
        for structure, offset, message in items[:LIST_LIMIT]:
            self.add(structure, offset, severity, message, fix=fix)
        rest = (len(items) if total is None else total) - LIST_LIMIT
        if rest > 0:
            self.add(items[-1][0], None, severity, summary.format(n=rest), count=rest, fix=fix)

    @property
    def differencing(self) -> bool:
        return self.metadata is not None and self.metadata.has_parent

    def count(self, severity: str) -> int:
        return sum(f.count for f in self.findings if f.severity == severity)


def read_upto(source: RandomAccess, offset: int, length: int) -> bytes:
    """Read up to ``length`` bytes at ``offset`` (fewer at the end of the file)."""
    length = max(0, min(length, source.size() - offset))
    buf = bytearray(length)
    got = source.readinto(offset, memoryview(buf))
    return bytes(buf[:got])


def _hex(value: int) -> str:
    return f"0x{value:x}"


def _readable_creator(raw: bytes) -> str | None:
    """The creator string of a file identifier whose signature is damaged, if it still reads as
    text (UTF-16LE, printable up to the first NUL); None otherwise (MS-VHDX 2.2.1)."""
    padded = FILE_IDENTIFIER_SIGNATURE + raw[len(FILE_IDENTIFIER_SIGNATURE) : FILE_IDENTIFIER_SIZE]
    padded += bytes(FILE_IDENTIFIER_SIZE - len(padded))
    try:
        creator = parse_struct(FILE_IDENTIFIER, padded, structure="file identifier", offset=0).creator
    except FormatError:
        return None
    creator = creator.split("\0", 1)[0]
    return creator if creator.isprintable() else None


def scan(path: str, *, progress: ProgressCallback | None = None, parent: str | None = None,
         parent_search: Sequence[str | os.PathLike[str]] = (), ignore_id_mismatch: bool = False,
         seen: set[tuple[int, int]] | None = None) -> tuple[Scan, list[tuple[str, Scan]]]:
    """Examine the file at ``path`` without writing it; return the scan and the scans of its
    ancestors (path, scan), nearest first.

    Raises:
        OSError: the file cannot be opened or read.
    """
    source = open_source(path, writable=False)  # a local file, or a URL read through fsspec
    try:
        seen = set() if seen is None else seen
        seen.add(source_identity(source))  # type: ignore[arg-type]
        s = Scan(path=path)
        _Scanner(s, source, progress).run()
    finally:
        source.close()
    chain: list[tuple[str, Scan]] = []
    if s.differencing and s.metadata is not None and s.metadata.parent_locator is not None:
        chain = _check_parent(s, parent, parent_search, ignore_id_mismatch, seen, progress)
    return s, chain


class _Scanner:
    """Runs the checks of one file in order, each on its own structure, filling a ``Scan``."""

    def __init__(self, s: Scan, raw: RandomAccess, progress: ProgressCallback | None) -> None:
        self.s = s
        self.raw = raw
        self.view: RandomAccess = raw
        self.progress = progress
        self.structures: list[tuple[int, int, str]] = []  # fixed structures: header section, log, regions
        # Space some present BAT entry points at, usable or not: not counted as leaked while an
        # entry claims it (it becomes a leak once a repair detaches the entry). Arrays of start
        # offsets (all inside the file), each with the length of its objects.
        self.claimed: list[tuple[npt.NDArray[np.int64], int]] = []
        # The decoded BAT, kept between the BAT and sector bitmap checks. An image can have
        # millions of blocks: they are arrays indexed by block (chunk) number, never one Python
        # object per block.
        self._payload_states: npt.NDArray[np.uint8] = np.zeros(0, dtype=np.uint8)
        self._payload_offsets: npt.NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)
        # The payload and sector bitmap blocks kept after the checks (the others are detached):
        # what the overlap check places in the file.
        self._payload_kept: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self._bitmap_usable: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)
        self._bitmap_offsets: npt.NDArray[np.uint64] = np.zeros(0, dtype=np.uint64)

    def step(self, done: int) -> None:
        report(self.progress, "check", done, _PHASES, "steps")

    def run(self) -> None:
        s = self.s
        s.file_size = s.size = self.raw.size()
        self.step(0)
        if not self.file_identifier():
            return
        self.step(1)
        self.headers()
        self.step(2)
        self.log()
        self.step(3)
        self.region_tables()
        self.step(4)
        if s.table is not None:
            self.regions()
            self.metadata()
        self.step(5)
        if s.geometry is not None and s.table is not None:
            self.bat()
        self.step(6)
        if s.bat is not None and s.differencing:
            self.sector_bitmaps()
        self.step(7)
        if s.bat is not None and s.current is not None and not s.errors:
            self.free_space()
        self.step(_PHASES)

    # --- file identifier (MS-VHDX 2.2.1) ---------------------------------------------------------
    def file_identifier(self) -> bool:
        s = self.s
        raw = read_upto(self.raw, FILE_IDENTIFIER_OFFSET, FILE_IDENTIFIER_SIZE)
        if s.file_size > MAX_FILE_SIZE:
            s.add("file", 0, CORRUPTION, f"file is {_hex(s.file_size)} bytes, larger than any valid VHDX")
        if not raw.startswith(FILE_IDENTIFIER_SIGNATURE):
            # Not a VHDX at all unless something else says it is: a check of an arbitrary file
            # must say "not a VHDX", not list a hundred corruptions.
            h = [read_upto(self.raw, off, HEADER_SIZE) for off in HEADER_OFFSETS]
            t = [read_upto(self.raw, off, REGION_TABLE_SIZE) for off in TABLE_OFFSETS]
            looks_like_vhdx = any(_valid_header(x, off) for x, off in zip(h, HEADER_OFFSETS)) or any(
                _valid_table(x) for x in t)
            if not looks_like_vhdx:
                s.errors.append("not a VHDX file (no 'vhdxfile' signature, no valid header or region table)")
                return False
            s.creator = _readable_creator(raw)
            s.add("file identifier", 0, CORRUPTION, "the 'vhdxfile' signature is missing", fix=FIX_IDENTIFIER)
        elif len(raw) == FILE_IDENTIFIER_SIZE:
            try:
                parse_struct(FILE_IDENTIFIER, raw, structure="file identifier", offset=0)
            except FormatError as err:
                s.add("file identifier", 0, WARNING, f"creator string cannot be decoded ({err.message})")
        if s.file_size < HEADER_SECTION_SIZE:
            s.add("file", 0, CORRUPTION, f"file is only {_hex(s.file_size)} bytes, shorter than the 1 MiB header section")
        self.structures.append((0, HEADER_SECTION_SIZE, "header section"))
        return True

    # --- headers (MS-VHDX 2.2.2; VHDX-FORMAT.md 5.2) ------------------------------------------------
    def headers(self) -> None:
        s = self.s
        problems: list[str | None] = []
        for i, offset in enumerate(HEADER_OFFSETS):
            raw = read_upto(self.raw, offset, HEADER_SIZE)
            s.header_raw.append(raw)
            try:
                h: Header | None = parse_header(raw, offset)
                problems.append(None)
            except FormatError as err:
                h = None
                problems.append(err.message)
            s.headers.append(h)
        h1, h2 = s.headers
        if h1 is None and h2 is None:
            for i, offset in enumerate(HEADER_OFFSETS):
                s.add(f"header {i + 1}", offset, CORRUPTION, f"unusable: {problems[i]}")
            s.add("headers", HEADER_1_OFFSET, INFO, "no valid header: the log was not checked and cannot be replayed")
            return
        if h1 is not None and h2 is not None and h1.sequence_number == h2.sequence_number:
            if s.header_raw[0] != s.header_raw[1]:
                choice = self._tie_choice(h1, h2)
                message = f"both headers carry sequence number {h1.sequence_number} but differ: neither is current"
                if choice is None:
                    s.add("headers", HEADER_1_OFFSET, CORRUPTION, message + " (and no safe choice between them)")
                    return
                s.tie_index, why = choice
                s.add("headers", HEADER_1_OFFSET, CORRUPTION,
                      f"{message}; a repair keeps header {s.tie_index + 1} ({why})", fix=FIX_HEADER_TIE)
                return
            s.add("headers", HEADER_1_OFFSET, WARNING,
                  f"both headers carry sequence number {h1.sequence_number} (identical copies, as Disk2VHD writes them)")
            index = 0
        elif h1 is not None and h2 is not None:
            index = 0 if h1.sequence_number > h2.sequence_number else 1
        else:
            index = 0 if h1 is not None else 1
        current = s.headers[index]
        assert current is not None
        other = 1 - index
        if s.headers[other] is None:
            s.add(f"header {other + 1}", HEADER_OFFSETS[other], CORRUPTION,
                  f"unusable ({problems[other]}); header {index + 1} is current", fix=FIX_HEADER)
        else:
            stale = s.headers[other]
            assert stale is not None
            try:
                validate_header(stale, HEADER_OFFSETS[other])
            except VhdxError as err:
                s.add(f"header {other + 1}", HEADER_OFFSETS[other], WARNING,
                      f"non-current header breaks a rule: {err.message}", fix=FIX_HEADER)
        try:
            validate_header(current, HEADER_OFFSETS[index])
        except UnsupportedError as err:
            s.errors.append(f"header {index + 1}: {err.message}")
            return
        except VhdxError as err:
            s.add(f"header {index + 1}", HEADER_OFFSETS[index], CORRUPTION, f"current header: {err.message}")
            return
        if current.log_length > MAX_LOG_LENGTH:
            s.add(f"header {index + 1}", HEADER_OFFSETS[index], CORRUPTION,
                  f"log length {_hex(current.log_length)} is over the 4 GiB limit")
            return
        s.current, s.current_index = current, index

    def _tie_choice(self, h1: Header, h2: Header) -> tuple[int, str] | None:
        """Which of two valid headers with equal sequence numbers a repair keeps (5.2 says
        neither is current), and why. Only a header that passes the current-header rules and
        whose log lies in the file qualifies. A header whose log holds a complete sequence must
        win: keeping the other would drop metadata changes that were committed. With nothing to
        tell them apart, header 1 is kept. None: both hold a log to replay (no safe choice)."""
        s = self.s
        usable: list[int] = []
        for i, h in enumerate((h1, h2)):
            try:
                validate_header(h, HEADER_OFFSETS[i])
            except VhdxError:
                continue
            if h.log_length > MAX_LOG_LENGTH or h.log_offset + h.log_length > s.file_size:
                continue
            usable.append(i)
        if not usable:
            return None
        if len(usable) == 1:
            return usable[0], f"header {2 - usable[0]} breaks a header rule"
        pending = []
        for i, h in enumerate((h1, h2)):
            if h.log_is_empty:
                continue
            try:
                scan_result = scan_log(read_upto(self.raw, h.log_offset, h.log_length), h.log_guid, h.log_offset)
            except VhdxError:  # a hostile log (README "Limits"): reported by log()
                continue
            if scan_result.head is not None:
                pending.append(i)
        if len(pending) == 2:
            return None
        if pending:
            return pending[0], "its log holds entries to replay"
        return 0, "both are usable and neither has a log to replay"

    # --- log (MS-VHDX 2.3; VHDX-FORMAT.md 10) ---------------------------------------------------------
    def log(self) -> None:
        s = self.s
        h = s.current
        if h is None:
            s.log_status = "unusable"
            return
        log_end = h.log_offset + h.log_length
        if h.log_length:
            self.structures.append((h.log_offset, log_end, "log"))
        in_file = log_end <= s.file_size
        s.log_usable = h.log_length > 0 and in_file
        if not in_file and h.log_length:
            s.add("log", h.log_offset, CORRUPTION,
                  f"the log ({_hex(h.log_offset)}-{_hex(log_end)}) lies past the end of the file ({_hex(s.file_size)})")
        if h.log_is_empty:
            if in_file and h.log_length and self._log_has_entries(h):
                s.add("log", h.log_offset, INFO, "the log holds entries of an earlier session (ignored: LogGuid is zero)")
            return
        if not in_file:
            s.log_status = "unusable"
            return
        log_bytes = read_upto(self.raw, h.log_offset, h.log_length)
        try:
            scan_result = scan_log(log_bytes, h.log_guid, h.log_offset)
        except VhdxError as err:  # a hostile log that cannot even be scanned (README "Limits")
            s.log_status = "unreplayable"
            s.log_usable = False
            s.add("log", h.log_offset, CORRUPTION, f"the log cannot be scanned: {err.message}")
            return
        s.log_scan = scan_result
        head = scan_result.head
        if head is None:
            # The spec calls this corrupt; QEMU treats it as "nothing to replay", and a writer that
            # died between setting LogGuid and finishing its first entry leaves exactly this.
            s.log_status = "no-sequence"
            s.add("log", h.log_offset, WARNING, "LogGuid is set but the log holds no complete sequence (nothing to "
                  "replay; a writer stopped before its first entry was durable)", fix=FIX_LOG)
            return
        first = scan_result.active[0]
        where = h.log_offset + head.log_offset
        try:
            if head.last_file_offset > MAX_FILE_SIZE:
                raise FormatError(f"log entry claims a file size of {_hex(head.last_file_offset)}")
            validate_active(scan_result, s.file_size, h.log_offset, h.log_length, h.log_offset)
            for entry in scan_result.active:
                for w in entry.writes:
                    if isinstance(w, ZeroWrite) and w.file_offset + w.length > MAX_FILE_SIZE:
                        raise FormatError(f"zero descriptor covers {_hex(w.file_offset)}+{_hex(w.length)}")
        except VhdxError as err:
            s.log_status = "unreplayable"
            # Any write through the log starts with a new LogGuid, which would silently discard
            # this sequence: no repair that needs the log may run.
            s.log_usable = False
            s.add("log", where, CORRUPTION, f"the log holds a sequence that cannot be replayed: {err.message}")
            return
        s.log_status = "pending"
        entries = len(scan_result.active)
        s.add("log", where, CORRUPTION,
              f"the log holds {entries} unreplayed entr{'y' if entries == 1 else 'ies'} (sequence "
              f"{first.sequence_number}-{head.sequence_number}); the metadata on disk is stale until it is replayed",
              fix=FIX_LOG)
        overlay = OverlaySource(self.raw, min_size=head.last_file_offset)
        overlay.add_many((w.file_offset, None, w.length) if isinstance(w, ZeroWrite) else (w.file_offset, w.data, len(w.data))
                         for entry in scan_result.active for w in entry.writes)
        self.view = overlay
        s.size = overlay.size()

    def _log_has_entries(self, h: Header) -> bool:
        data = read_upto(self.raw, h.log_offset, h.log_length)
        usable = len(data) - len(data) % LOG_SECTOR_SIZE
        if not usable:
            return False
        sectors = np.frombuffer(data[:usable], dtype="<u4").reshape(-1, LOG_SECTOR_SIZE // 4)
        return bool(np.any(sectors[:, 0] == int.from_bytes(LOG_ENTRY_SIGNATURE, "little")))

    # --- region tables (MS-VHDX 2.2.3; VHDX-FORMAT.md 6) ---------------------------------------------
    def region_tables(self) -> None:
        s = self.s
        valid: list[bool] = []
        for i, offset in enumerate(TABLE_OFFSETS):
            raw = read_upto(self.view, offset, REGION_TABLE_SIZE)
            s.table_raw.append(raw)
            table = self._region_table(raw, i)
            s.tables.append(table)
            valid.append(table is not None)
        if valid[0] and valid[1] and s.table_raw[0] != s.table_raw[1]:
            s.add("region table 2", REGION_TABLE_2_OFFSET, CORRUPTION,
                  "differs from region table 1 (both copies must be identical; readers use copy 1)",
                  fix=FIX_REGION_TABLE)
        if valid[0]:
            s.table, s.table_index = s.tables[0], 0
        elif valid[1]:
            s.table, s.table_index = s.tables[1], 1
        else:
            s.add("region tables", REGION_TABLE_1_OFFSET, INFO,
                  "no usable region table: the metadata and the BAT were not checked")
            return
        bad = 1 - s.table_index
        if not valid[bad]:
            # The finding for the damaged copy was added by _region_table; mark it repairable.
            s.findings = [RawFinding(f.structure, f.file_offset, f.severity, f.message, f.count, FIX_REGION_TABLE)
                          if f.structure == f"region table {bad + 1}" and f.severity == CORRUPTION else f
                          for f in s.findings]

    def _region_table(self, raw: bytes, i: int) -> RegionTable | None:
        """Check one copy on its own; return it when usable."""
        s = self.s
        name, offset = f"region table {i + 1}", TABLE_OFFSETS[i]
        if len(raw) < REGION_TABLE_SIZE:
            s.add(name, offset, CORRUPTION, f"truncated: the file ends {_hex(offset + len(raw))}")
            return None
        try:
            head = parse_struct(REGION_TABLE_HEADER, raw[:REGION_TABLE_HEADER_SIZE], structure=name, offset=offset)
        except FormatError as err:
            s.add(name, offset, CORRUPTION, err.message)
            return None
        if not checksum.verify(raw, REGION_TABLE_CHECKSUM_OFFSET):
            s.add(name, offset, CORRUPTION, f"checksum mismatch (stored 0x{head.checksum:08x}, computed "
                  f"0x{checksum.compute(raw, REGION_TABLE_CHECKSUM_OFFSET):08x})")
            return None
        if head.entry_count > MAX_REGION_ENTRIES:
            s.add(name, offset, CORRUPTION, f"entry count {head.entry_count} is over {MAX_REGION_ENTRIES}")
            return None
        parsed = parse_struct(REGION_TABLE, raw, structure=name, offset=offset)
        problems: list[tuple[int, str]] = []
        warnings: list[tuple[int, str]] = []
        entries: list[RegionTableEntry] = []
        seen: set[uuid.UUID] = set()
        if head.reserved:
            warnings.append((offset, f"reserved field is {_hex(head.reserved)}, not 0"))
        for k, e in enumerate(parsed.entries):
            entry = RegionTableEntry(e.guid, e.file_offset, e.length, bool(e.flags & REGION_REQUIRED_FLAG), e.flags)
            where = offset + REGION_TABLE_HEADER_SIZE + k * REGION_TABLE_ENTRY_SIZE
            label = f"{entry.name} region"
            if entry.guid in seen:
                problems.append((where, f"the {label} is listed twice"))
                continue
            seen.add(entry.guid)
            if entry.guid not in KNOWN_REGIONS and entry.required:
                s.errors.append(f"{name}: unknown required region {entry.guid} (this implementation cannot check it)")
            if e.flags & ~REGION_REQUIRED_FLAG:
                warnings.append((where, f"the {label} entry has reserved flag bits set ({_hex(e.flags)})"))
            if entry.file_offset % OBJECT_ALIGNMENT or entry.length % OBJECT_ALIGNMENT:
                problems.append((where, f"the {label} at {_hex(entry.file_offset)} length {_hex(entry.length)} "
                                        "is not 1 MiB aligned"))
            elif entry.file_offset < HEADER_SECTION_SIZE:
                problems.append((where, f"the {label} at {_hex(entry.file_offset)} lies in the header section"))
            elif entry.length == 0 and entry.guid in KNOWN_REGIONS:
                problems.append((where, f"the {label} is empty"))
            entries.append(entry)
        for guid, label in KNOWN_REGIONS.items():
            if guid not in seen:
                problems.append((offset, f"the {label} region is missing"))
        ordered = sorted(entries, key=lambda x: x.file_offset)
        for a, b in zip(ordered, ordered[1:]):
            if b.file_offset < a.end:
                problems.append((offset, f"the {a.name} region and the {b.name} region overlap"))
        for where, message in warnings:
            s.add(name, where, WARNING, message)
        for where, message in problems:
            s.add(name, where, CORRUPTION, message)
        return None if problems else RegionTable(tuple(entries))

    def regions(self) -> None:
        """Where the chosen table puts the regions, against the file and the log."""
        s = self.s
        assert s.table is not None
        h = s.current
        for e in s.table.entries:
            label = f"{e.name} region"
            if e.end > s.size:
                s.add(label, e.file_offset, CORRUPTION,
                      f"the {label} ({_hex(e.file_offset)}-{_hex(e.end)}) lies past the end of the file ({_hex(s.size)})")
            if h is not None and h.log_length and e.file_offset < h.log_offset + h.log_length and e.end > h.log_offset:
                s.add(label, e.file_offset, CORRUPTION, f"the {label} overlaps the log")
                s.log_usable = False  # a log write would land in the region
            self.structures.append((e.file_offset, e.end, label))

    # --- metadata (MS-VHDX 2.6; VHDX-FORMAT.md 7) ---------------------------------------------------
    def metadata(self) -> None:
        s = self.s
        assert s.table is not None
        region = s.table.metadata
        table_raw = read_upto(self.view, region.file_offset, min(METADATA_TABLE_SIZE, region.length))
        try:
            if len(table_raw) < min(METADATA_TABLE_SIZE, region.length):
                raise FormatError("the file ends inside the metadata table", structure="metadata table",
                                  offset=region.file_offset)
            entries = parse_metadata_table(table_raw, region.file_offset, region.length)
            values: dict[uuid.UUID, bytes] = {}
            for guid, e in known_entries(entries).items():
                value = read_upto(self.view, region.file_offset + e.offset, e.length)
                if len(value) < e.length:
                    raise FormatError("the file ends inside the item", structure="metadata item",
                                      offset=region.file_offset + e.offset)
                values[guid] = value
            metadata = decode_metadata(entries, values, region.file_offset)
            geometry = metadata.geometry()
        except UnsupportedError as err:
            s.errors.append(f"{err.structure or 'metadata'}: {err.message}")
            return
        except FormatError as err:
            s.add(err.structure or "metadata", err.offset if err.offset is not None else region.file_offset,
                  CORRUPTION, err.message)
            s.add("metadata", region.file_offset, INFO, "the metadata is unusable: the BAT was not checked")
            return
        head = parse_struct(METADATA_TABLE_HEADER, table_raw[: METADATA_TABLE_HEADER.sizeof()],
                            structure="metadata table", offset=region.file_offset)
        if head.reserved or any(head.reserved2):
            s.add("metadata table", region.file_offset, WARNING, "reserved header fields are not zero")
        known_flags = FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED | FILE_PARAMETERS_HAS_PARENT
        fp_offset = _item_offset(entries, region.file_offset)
        if metadata.file_parameter_flags & ~known_flags:
            s.add("file parameters", fp_offset, WARNING,
                  f"reserved flag bits are set ({_hex(metadata.file_parameter_flags)})")
        if metadata.has_parent and metadata.leave_block_allocated:
            s.add("file parameters", fp_offset, INFO, "LeaveBlockAllocated is set on a differencing disk (ignored)")
        if not metadata.has_parent and any(e.item_id == PARENT_LOCATOR_GUID and not e.is_user for e in entries):
            s.add("parent locator", region.file_offset, WARNING,
                  "a parent locator item is present but HasParent is not set (it is ignored)")
        s.metadata, s.geometry = metadata, geometry

    # --- BAT (MS-VHDX 2.5; VHDX-FORMAT.md 8) ----------------------------------------------------------
    def bat(self) -> None:
        s = self.s
        g = s.geometry
        assert g is not None and s.table is not None and s.metadata is not None
        region = s.table.bat
        s.bat_offset = region.file_offset
        needed = g.bat_entry_count
        if needed * BAT_ENTRY_SIZE > region.length:
            s.add("BAT region", region.file_offset, CORRUPTION,
                  f"the BAT region holds {region.length // BAT_ENTRY_SIZE} entries but the disk needs {needed}")
        count = min(g.bat_entry_count_full, region.length // BAT_ENTRY_SIZE)
        if needed > count and needed * BAT_ENTRY_SIZE > max(s.size, region.length):
            # The geometry needs a BAT larger than the whole file: padding the missing entries
            # would cost memory in proportion to a size nobody stored (README "Limits"). The
            # region's shortfall is the corruption reported above.
            s.add("BAT", region.file_offset, INFO, "the BAT entries are not examined: the declared geometry needs "
                  f"{needed} of them, more than the file could hold")
            return
        bat = np.zeros(max(count, needed), dtype=np.uint64)
        got = _read_array(self.view, region.file_offset, bat[:count])
        if got < count * BAT_ENTRY_SIZE:
            s.add("BAT", region.file_offset + got, CORRUPTION, "the file ends inside the BAT; the missing "
                  "entries are taken as NOT_PRESENT")
        s.bat = bat
        self._payload_entries(bat, g)
        self._bitmap_entries(bat, g)
        self._overlaps()
        self._statistics(bat, g)

    def _where(self, index: int) -> int:
        return self.s.bat_offset + index * BAT_ENTRY_SIZE

    def _detach(self, indices: npt.NDArray[np.int64], blocks: npt.NDArray[np.int64] | None) -> None:
        """Detach the BAT entries ``indices``: payload blocks ``blocks`` (the same length), or
        sector bitmap entries (None). The blocks are dropped from those kept."""
        # Differencing disks get ZERO so that the parent's (stale) data does not show through;
        # the others NOT_PRESENT (VHDX-FORMAT.md 8.3, 12 step 6).
        s = self.s
        if not indices.size:
            return
        value = int(PayloadBlockState.ZERO) if (s.differencing and blocks is not None) else int(PayloadBlockState.NOT_PRESENT)
        s.detach.update(dict.fromkeys(indices.tolist(), value))
        if blocks is not None:
            s.detached_blocks.update(blocks.tolist())
            self._payload_kept[blocks] = False

    def _payload_entries(self, bat: npt.NDArray[np.uint64], g: DiskGeometry) -> None:
        s = self.s
        entries = bat[g.payload_bat_indices()]
        states = (entries & np.uint64(BAT_STATE_MASK)).astype(np.uint8)
        # Unsigned: FileOffsetMB << 20 of a garbage entry does not fit in an int64.
        offsets = entries & np.uint64(BAT_FILE_OFFSET_MASK)
        size = s.size

        def listing(blocks: npt.NDArray[np.intp], text: str) -> list[tuple[str, int | None, str]]:
            # Only what add_many shows is formatted (a garbage BAT has millions of bad entries).
            return [("BAT", self._where(g.payload_bat_index(int(b))),
                     text.format(b=int(b), state=int(states[b]), off=_hex(int(offsets[b])))) for b in blocks[:LIST_LIMIT]]

        bad = np.zeros(len(states), dtype=bool)
        invalid = np.flatnonzero(~np.isin(states, _KNOWN_PAYLOAD_STATES))
        s.add_many(listing(invalid, "payload block {b} has reserved state {state}"), CORRUPTION,
                   "{n} more payload blocks have a reserved state", total=len(invalid), fix=FIX_BAT)
        bad[invalid] = True
        v095 = np.flatnonzero(states == PayloadBlockState.UNMAPPED_V095)
        if v095.size:
            s.add("BAT", self._where(g.payload_bat_index(int(v095[0]))), WARNING,
                  f"{v095.size} payload block(s) use state 5 (UNMAPPED in the v0.95 draft; read as UNMAPPED)",
                  count=1)
        partial = states == PayloadBlockState.PARTIALLY_PRESENT
        present = partial | (states == PayloadBlockState.FULLY_PRESENT)
        if not s.differencing:
            wrong = np.flatnonzero(partial)
            s.add_many(listing(wrong, "payload block {b} is PARTIALLY_PRESENT in a disk without a parent"),
                       CORRUPTION, "{n} more payload blocks are PARTIALLY_PRESENT in a disk without a parent",
                       total=len(wrong), fix=FIX_BAT)
            bad[wrong] = True
        low = np.flatnonzero(present & ~bad & (offsets < HEADER_SECTION_SIZE))
        s.add_many(listing(low, "payload block {b} is present at file offset {off}, inside the header section"),
                   CORRUPTION, "{n} more present payload blocks point inside the header section", total=len(low), fix=FIX_BAT)
        bad[low] = True
        past = np.flatnonzero(present & ~bad & (offsets >= size))
        s.add_many(listing(past, f"payload block {{b}} lies at {{off}}, past the end of the file ({_hex(size)})"),
                   CORRUPTION, "{n} more payload blocks lie past the end of the file", total=len(past), fix=FIX_BAT)
        bad[past] = True
        # A block may end past the end of the file only by the part beyond the virtual disk (QEMU's
        # fixed images end with a partial last block). Otherwise the file was cut short (QEMU: "image
        # has probably been truncated"); the missing part reads as zeros, and extending the file
        # makes that explicit without losing the part that is there.
        tail = np.flatnonzero(present & ~bad & (offsets > max(0, size - g.block_size)))
        # Offsets of blocks not past the end fit an int64; the virtual length is
        # ``block_virtual_length`` for every block at once (the last block may be partial).
        tail_length = np.minimum(g.block_size, g.virtual_size - (tail << g.block_shift))
        short = tail[offsets[tail].astype(np.int64) + tail_length > size]
        s.add_many(listing(short, f"payload block {{b}} at {{off}} is cut off by the end of the file ({_hex(size)}); "
                                  "the missing part reads as zeros"),
                   CORRUPTION, "{n} more payload blocks are cut off by the end of the file", total=len(short), fix=FIX_EXTEND)
        if short.size:
            s.extend_to = max(s.extend_to, int(offsets[short].max()) + g.block_size)
        stray = np.flatnonzero(((states == PayloadBlockState.NOT_PRESENT) | (states == PayloadBlockState.ZERO))
                               & (offsets != 0))
        if stray.size:
            s.add("BAT", self._where(g.payload_bat_index(int(stray[0]))), WARNING,
                  f"{stray.size} NOT_PRESENT/ZERO payload entr{'y has' if stray.size == 1 else 'ies have'} a non-zero "
                  "FileOffsetMB (reserved; Hyper-V fails to read ZERO entries with an offset)")
        reserved = np.flatnonzero((entries & _BAT_RESERVED_BITS) != 0)
        if reserved.size:
            s.add("BAT", self._where(g.payload_bat_index(int(reserved[0]))), WARNING,
                  f"{reserved.size} payload entr{'y has' if reserved.size == 1 else 'ies have'} reserved bits 3-19 set")
        del entries
        self._payload_offsets = offsets
        self._payload_states = states
        self._payload_kept = present & ~bad
        dropped = np.flatnonzero(bad)
        self._detach(_payload_bat_indices(g, dropped), dropped)
        # Inside the file: the offsets fit an int64.
        self.claimed.append((offsets[present & (offsets >= HEADER_SECTION_SIZE) & (offsets < size)].view(np.int64),
                             g.block_size))

    def _bitmap_entries(self, bat: npt.NDArray[np.uint64], g: DiskGeometry) -> None:
        s = self.s
        bidx = g.bitmap_bat_indices()
        inside = bidx < len(bat)
        entries = np.zeros(len(bidx), dtype=np.uint64)
        entries[inside] = bat[bidx[inside]]
        states = (entries & np.uint64(BAT_STATE_MASK)).astype(np.uint8)
        offsets = entries & np.uint64(BAT_FILE_OFFSET_MASK)
        present = states == SectorBitmapState.PRESENT
        invalid = np.flatnonzero(~present & (states != SectorBitmapState.NOT_PRESENT))
        s.add_many([("BAT", self._where(int(bidx[k])), f"sector bitmap entry {int(k)} has reserved state {int(states[k])}")
                    for k in invalid[:LIST_LIMIT]], CORRUPTION, "{n} more sector bitmap entries have a reserved state",
                   total=len(invalid), fix=FIX_BAT)
        self._detach(bidx[invalid], None)
        usable = np.zeros(len(bidx), dtype=bool)
        self.claimed.append((offsets[present & (offsets >= HEADER_SECTION_SIZE) & (offsets < s.size)].view(np.int64),
                             SECTOR_BITMAP_BLOCK_SIZE))
        if not s.differencing:
            # MS-VHDX 2.5.1.2: SB_BLOCK_NOT_PRESENT in every fixed or dynamic file. Readers ignore
            # the entry, but QEMU's check takes it for a payload entry; detaching it changes nothing
            # a reader sees.
            stray = np.flatnonzero(present)
            s.add_many([("BAT", self._where(int(bidx[k])), f"sector bitmap entry {int(k)} is PRESENT in a disk without "
                         "a parent (must be NOT_PRESENT)") for k in stray[:LIST_LIMIT]], CORRUPTION,
                       "{n} more sector bitmap entries are PRESENT in a disk without a parent", total=len(stray),
                       fix=FIX_BAT)
            self._detach(bidx[stray], None)
        else:
            size = s.size
            chunks = np.flatnonzero(present)
            at = offsets[chunks]
            low = at < HEADER_SECTION_SIZE
            past = ~low & (at >= size)
            ok = ~low & ~past
            # off + 1 MiB > size, without overflowing: ok offsets are past the header section.
            cut = ok & (at > max(0, size - SECTOR_BITMAP_BLOCK_SIZE))
            # One finding per damaged entry (in chunk order), as there are few sector bitmap blocks.
            for j in np.flatnonzero(~ok | cut).tolist():
                k, off = int(chunks[j]), int(at[j])
                where = self._where(int(bidx[k]))
                if low[j]:
                    s.add("BAT", where, CORRUPTION, f"sector bitmap block {k} is at {_hex(off)}, inside the header "
                          "section", fix=FIX_BAT)
                elif past[j]:
                    s.add("BAT", where, CORRUPTION, f"sector bitmap block {k} lies at {_hex(off)}, past the end of "
                          f"the file ({_hex(size)})", fix=FIX_BAT)
                else:
                    s.add("BAT", where, CORRUPTION, f"sector bitmap block {k} is cut off by the end of the file "
                          f"({_hex(size)}); the missing part reads as zeros", fix=FIX_EXTEND)
            if cut.any():
                s.extend_to = max(s.extend_to, int(at[cut].max()) + SECTOR_BITMAP_BLOCK_SIZE)
            usable[chunks[ok]] = True
            self._detach(bidx[chunks[~ok]], None)
        self._bitmap_usable = usable
        self._bitmap_offsets = offsets
        if s.differencing:
            self._orphan_partials(g)

    def _orphan_partials(self, g: DiskGeometry) -> None:
        """PARTIALLY_PRESENT blocks need their chunk's sector bitmap (VHDX-FORMAT.md 8.2)."""
        s = self.s
        partial = np.flatnonzero(self._payload_states == PayloadBlockState.PARTIALLY_PRESENT)
        if not partial.size:
            return
        # A present block is kept until it is detached: those already detached are not listed again.
        orphans = partial[~self._bitmap_usable[partial // g.chunk_ratio] & self._payload_kept[partial]]
        s.add_many([("BAT", self._where(g.payload_bat_index(int(b))),
                     f"payload block {int(b)} is PARTIALLY_PRESENT but its sector bitmap block is not usable")
                    for b in orphans[:LIST_LIMIT]], CORRUPTION,
                   "{n} more PARTIALLY_PRESENT blocks have no usable sector bitmap block", total=len(orphans), fix=FIX_BAT)
        self._detach(_payload_bat_indices(g, orphans), orphans)

    def _kept_blocks(self, g: DiskGeometry) -> _Blocks:
        return _Blocks(g, np.flatnonzero(self._bitmap_usable), self._bitmap_offsets,
                       np.flatnonzero(self._payload_kept), self._payload_offsets)

    def _overlaps(self) -> None:
        """Blocks against the header section, the log and the regions (detached), and against
        each other (the later one moved to new space, so that both keep what they read now)."""
        s = self.s
        g = s.geometry
        assert g is not None
        blocks = self._kept_blocks(g)
        if not len(blocks):
            return
        starts, ends = blocks.starts, blocks.ends()
        clash = np.zeros(len(blocks), dtype=bool)
        for lo, hi, name in self.structures:
            hits = blocks.listing_order(np.flatnonzero((starts < hi) & (ends > lo) & ~clash))
            items = [("BAT", self._where(blocks.bat_index(i)), f"{blocks.name(i)} at {_hex(int(starts[i]))} overlaps "
                      f"the {name}") for i in hits[:LIST_LIMIT].tolist()]
            s.add_many(items, CORRUPTION, f"{{n}} more blocks overlap the {name}", total=len(hits), fix=FIX_BAT)
            clash[hits] = True
        if clash.any():
            dropped_payload = blocks.payload[clash[blocks.bitmaps:]]
            self._detach(_payload_bat_indices(g, dropped_payload), dropped_payload)
            dropped_bitmaps = blocks.bitmap[clash[: blocks.bitmaps]]
            self._detach(_bitmap_bat_indices(g, dropped_bitmaps), None)
            if dropped_bitmaps.size:
                # A sector bitmap block that is dropped takes its chunk's partial blocks with it.
                self._bitmap_usable[dropped_bitmaps] = False
                self._orphan_partials(g)
            blocks = self._kept_blocks(g)
        del clash, starts, ends
        if len(blocks) < 2:
            return
        # Ordered by (file offset, sector bitmaps first, block number): a stable sort of the file
        # offsets does that, as the blocks are laid out bitmaps first, each kind in index order
        # (and often already sorted: an image written in order).
        order: npt.NDArray[np.intp] | None = None  # None: the blocks are in order already
        if np.all(blocks.starts[1:] >= blocks.starts[:-1]):
            sorted_starts = blocks.starts
            reach = blocks.ends()
        else:
            order = np.argsort(blocks.starts, kind="stable")
            sorted_starts = blocks.starts[order]
            reach = blocks.ends(order)
        np.maximum.accumulate(reach, out=reach)  # the end of the furthest block so far
        # A block that starts before some earlier block ends is a candidate. Those that are not
        # (nearly all) start a run: nothing before them reaches them, so they are its owner.
        candidates = np.flatnonzero(sorted_starts[1:] < reach[:-1]) + 1
        del reach, sorted_starts
        if not candidates.size:
            return
        # Only the candidates are walked, in order, each run from the block before its first one.
        # A block that overlaps its run's owner (the block reaching furthest among those not
        # moved) is moved and does not extend the run; another one may become the owner.
        items = []
        total = 0
        owner = owner_end = -1
        previous = -2
        for p in candidates.tolist():
            if p != previous + 1:
                owner = p - 1 if order is None else int(order[p - 1])
                owner_end = blocks.end(owner)
            previous = p
            i = p if order is None else int(order[p])
            start, end = int(blocks.starts[i]), blocks.end(i)
            if start < owner_end:
                total += 1
                if len(items) < LIST_LIMIT:
                    if start == int(blocks.starts[owner]):
                        text = f"{blocks.name(i)} and {blocks.name(owner)} both point at file offset {_hex(start)}"
                    else:
                        text = (f"{blocks.name(i)} at {_hex(start)} overlaps {blocks.name(owner)} at "
                                f"{_hex(int(blocks.starts[owner]))}")
                    items.append(("BAT", self._where(blocks.bat_index(i)), text))
                s.relocate.append(blocks.block(i))
                continue
            if end > owner_end:
                owner, owner_end = i, end
        s.add_many(items, CORRUPTION, "{n} more blocks overlap other blocks", total=total, fix=FIX_BAT)

    def _statistics(self, bat: npt.NDArray[np.uint64], g: DiskGeometry) -> None:
        s = self.s
        present = np.isin(self._payload_states, _PRESENT)
        s.total_blocks = g.payload_block_count
        s.allocated_blocks = int(present.sum())
        offsets = self._payload_offsets[present]
        # qemu's definition: a block is fragmented when it does not follow the previous allocated
        # block (in virtual order) in the file.
        s.fragmented_blocks = int(np.count_nonzero(offsets[1:] != offsets[:-1] + g.block_size)) if offsets.size else 0

    # --- sector bitmaps (MS-VHDX 2.4.2; VHDX-FORMAT.md 9) ----------------------------------------------
    def sector_bitmaps(self) -> None:
        s = self.s
        g = s.geometry
        assert g is not None
        cr = g.chunk_ratio
        per_block = g.sectors_per_block // 8
        states = self._payload_states
        full_with_clear = 0
        # Partially present blocks with no sector bit set, and with every bit set: how many, and
        # the first (a differencing disk can have millions of partial blocks).
        empty_partial: list[int] = [0, -1]
        full_partial: list[int] = [0, -1]
        for k in np.flatnonzero(self._bitmap_usable).tolist():
            off = int(self._bitmap_offsets[k])
            data = read_upto(self.view, off, SECTOR_BITMAP_BLOCK_SIZE)
            bitmap = np.zeros(SECTOR_BITMAP_BLOCK_SIZE, dtype=np.uint8)
            bitmap[: len(data)] = np.frombuffer(data, dtype=np.uint8)
            first = k * cr
            blocks_here = min(cr, g.payload_block_count - first)
            chunk_states = states[first : first + blocks_here]
            if not np.any(chunk_states == PayloadBlockState.PARTIALLY_PRESENT):
                s.add("sector bitmap", off, INFO, f"sector bitmap block {k} is present but no block of its chunk is "
                      "partially present (unused)")
            # Bits for sectors past the end of the virtual disk must be 0 (VHDX-FORMAT.md 9).
            chunk_sectors = g.chunk_size // g.logical_sector_size
            disk_sectors = g.virtual_size // g.logical_sector_size - k * chunk_sectors
            if disk_sectors < chunk_sectors:
                tail = np.unpackbits(bitmap, bitorder="little")[disk_sectors:]
                stray = int(tail.sum())
                if stray:
                    s.add("sector bitmap", off, WARNING, f"sector bitmap block {k} has {stray} bit(s) set for sectors "
                          "past the end of the virtual disk (must be 0)")
            slices = bitmap[: blocks_here * per_block].reshape(blocks_here, per_block)
            all_set = np.all(slices == 0xFF, axis=1)
            none_set = ~np.any(slices, axis=1)
            full = chunk_states == PayloadBlockState.FULLY_PRESENT
            part = chunk_states == PayloadBlockState.PARTIALLY_PRESENT
            full_with_clear += int(np.count_nonzero(full & ~all_set))
            for tally, mask in ((empty_partial, part & none_set), (full_partial, part & all_set)):
                hits = np.flatnonzero(mask)
                if hits.size and not tally[0]:
                    tally[1] = int(hits[0]) + first
                tally[0] += int(hits.size)
        if full_with_clear:
            s.add("sector bitmap", None, INFO, f"{full_with_clear} FULLY_PRESENT block(s) have clear bits in the sector "
                  "bitmap (the bitmap is ignored for them)")
        if empty_partial[0]:
            s.add("BAT", self._where(g.payload_bat_index(empty_partial[1])), WARNING,
                  f"{empty_partial[0]} PARTIALLY_PRESENT block(s) have no sector bit set (every sector comes from the "
                  f"parent), first: block {empty_partial[1]}")
        if full_partial[0]:
            s.add("BAT", self._where(g.payload_bat_index(full_partial[1])), INFO,
                  f"{full_partial[0]} PARTIALLY_PRESENT block(s) have every sector bit set (could be FULLY_PRESENT), "
                  f"first: block {full_partial[1]}")

    # --- leaked and free space (VHDX-FORMAT.md 1.2) ------------------------------------------------------
    def free_space(self) -> None:
        """Find the 1 MiB units past the header section that nothing references.

        Such space is a leak when it holds data (a block written before a crash, a trimmed block):
        after the last structure truncation reclaims it, between structures compaction does.
        Unreferenced space that reads as zero is free space, which the format allows
        (VHDX-FORMAT.md 1.2): qemu-img create leaves 4 MiB of it after the metadata of every image,
        and counting it as leaked would fail every image qemu makes.
        """
        s = self.s
        size = s.size
        # Offsets read from the file may lie anywhere up to 2**64 (past int64); only the part of
        # each structure inside the file bounds its free space. Claimed blocks start inside it.
        starts = np.concatenate([np.array([min(r[0], size) for r in self.structures], dtype=np.int64)]
                                + [at for at, _ in self.claimed])
        if not starts.size:
            return
        ends = np.concatenate([np.array([min(r[1], size) for r in self.structures], dtype=np.int64)]
                              + [np.minimum(at + length, size) for at, length in self.claimed])
        order = np.argsort(starts, kind="stable")
        starts = starts[order]
        running = ends[order]
        del order, ends
        np.maximum.accumulate(running, out=running)
        s.used_end = int(running[-1])
        s.leak_checked = True
        gaps: list[tuple[int, int]] = []
        # Gaps are where a start lies past everything before it.
        breaks = np.flatnonzero(starts[1:] > running[:-1])
        for i in breaks.tolist():
            gaps.append((int(running[i]), int(starts[i + 1])))
        file_end = align_up(size, OBJECT_ALIGNMENT)
        for lo, hi in gaps:
            lo, hi = max(lo, HEADER_SECTION_SIZE), min(hi, size)
            if lo >= hi:
                continue
            units = ceil_div(hi - lo, OBJECT_ALIGNMENT)
            if self._holds_data(lo, hi):
                s.add("file", lo, LEAK, f"{format_size(hi - lo)} at {_hex(lo)}-{_hex(hi)} hold data that nothing references "
                      "(interior: compaction reclaims it)", count=units)
            else:
                s.add("file", lo, INFO, f"{format_size(hi - lo)} of free space at {_hex(lo)}-{_hex(hi)} (reads as zero)")
        if s.used_end < size:
            lo = s.used_end
            units = ceil_div(file_end - lo, OBJECT_ALIGNMENT)
            if self._holds_data(lo, size):
                s.add("file", lo, LEAK, f"{format_size(size - lo)} at {_hex(lo)}-{_hex(size)} past the last structure hold data that "
                      "nothing references", count=units,
                      fix=FIX_TRUNCATE if s.log_usable and s.file_size == s.size else None)
            else:
                # qemu-img create leaves the 4 MiB after the metadata of an empty image this way.
                s.add("file", lo, INFO, f"{format_size(size - lo)} of free space at the end of the file, {_hex(lo)}-{_hex(size)} "
                      "(reads as zero)")

    def _holds_data(self, lo: int, hi: int) -> bool:
        for start, end in _data_ranges(self.raw, lo, hi):
            pos = start
            while pos < end:
                n = min(_READ_CHUNK, end - pos)
                chunk = read_upto(self.view, pos, n)
                if np.any(np.frombuffer(chunk, dtype=np.uint8)):
                    return True
                pos += n
        return False


def _read_array(source: RandomAccess, offset: int, out: npt.NDArray[np.uint64]) -> int:
    """Read little-endian 64-bit entries at ``offset`` straight into ``out`` (no copy through
    bytes: a BAT can be hundreds of MiB); fewer at the end of the file. A partial last entry is
    left zero, as are the missing ones. Returns the bytes read."""
    raw = out.view(np.uint8)
    length = max(0, min(raw.size, source.size() - offset))
    got = source.readinto(offset, memoryview(raw)[:length]) if length else 0
    raw[got - got % BAT_ENTRY_SIZE : got] = 0
    if sys.byteorder == "big":
        out.byteswap(inplace=True)
    return got


def _data_ranges(source: RandomAccess, lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of [lo, hi) that are not file system holes (all of it when that is unknown)."""
    fd = getattr(source, "fd", -1)
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    if fd < 0 or seek_data is None or seek_hole is None:
        return [(lo, hi)]
    out: list[tuple[int, int]] = []
    pos = lo
    try:
        while pos < hi:
            try:
                start = os.lseek(fd, pos, seek_data)
            except OSError:
                break  # ENXIO: no data past pos
            if start >= hi:
                break
            end = min(os.lseek(fd, start, seek_hole), hi)
            out.append((start, end))
            pos = end
    except OSError:
        return [(lo, hi)]
    return out


def _valid_header(raw: bytes, offset: int) -> bool:
    try:
        parse_header(raw, offset)
        return True
    except FormatError:
        return False


def _valid_table(raw: bytes) -> bool:
    return (len(raw) == REGION_TABLE_SIZE and raw.startswith(REGION_TABLE_SIGNATURE)
            and checksum.verify(raw, REGION_TABLE_CHECKSUM_OFFSET))


def _item_offset(entries: tuple[MetadataEntry, ...], region_offset: int) -> int:
    for e in entries:
        if e.item_id == FILE_PARAMETERS_GUID and not e.is_user:
            return region_offset + e.offset
    return region_offset


# --- parents (MS-VHDX 2.6.2.6; VHDX-FORMAT.md 7.7) ---------------------------------------------------
def _candidates(s: Scan, explicit: str | None, search: Sequence[str | os.PathLike[str]]) -> list[str]:
    assert s.metadata is not None and s.metadata.parent_locator is not None
    if explicit is not None:
        return [os.fspath(explicit)]
    locator = s.metadata.parent_locator
    if is_url(s.path):  # the parent of a remote image is looked for next to it on the same store
        paths = candidate_urls(locator, s.path)
    else:
        paths = candidate_paths(locator, os.path.dirname(os.path.abspath(s.path)))
    for folder in search:
        for path in candidate_paths(locator, os.fspath(folder)):
            if os.path.dirname(path) == os.path.normpath(os.fspath(folder)) and path not in paths:
                paths.append(path)
    return paths


def _is_file(path: str) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    try:
        RemoteSource.open(path).close()
    except FileNotFoundError:
        return False
    return True


def _path_identity(path: str) -> tuple[object, ...] | None:
    if is_url(path):
        return RemoteSource.open(path).identity
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def _check_parent(s: Scan, explicit: str | None, search: Sequence[str | os.PathLike[str]], ignore_id_mismatch: bool,
                  seen: set[tuple[int, int]], progress: ProgressCallback | None) -> list[tuple[str, Scan]]:
    """Find the parent, check it (and its own chain) and the link to it."""
    assert s.metadata is not None and s.metadata.parent_locator is not None
    locator = s.metadata.parent_locator
    tried = _candidates(s, explicit, search)
    found = next((p for p in tried if _is_file(p)), None)
    if found is None:
        s.add("parent locator", None, WARNING, f"parent not found (tried: {', '.join(tried) or 'nothing'}); the chain "
              "was not checked")
        return []
    if _path_identity(found) in seen:
        s.add("parent locator", None, CORRUPTION, f"the chain of parents loops back to {found}")
        return []
    if len(seen) > MAX_CHAIN_DEPTH:
        s.add("parent locator", None, CORRUPTION, f"the chain of parents is deeper than {MAX_CHAIN_DEPTH}")
        return []
    parent, chain = scan(found, progress=progress, parent_search=search, ignore_id_mismatch=ignore_id_mismatch,
                         seen=seen)
    if parent.errors or parent.count(CORRUPTION):
        s.add("parent", None, CORRUPTION, f"the parent {found} is damaged ({parent.count(CORRUPTION)} corruption(s), "
              f"{len(parent.errors)} check error(s)); check it on its own")
    if parent.current is None or parent.metadata is None:
        return [(found, parent), *chain]
    actual = parent.current.data_write_guid
    if actual not in locator.linkages:
        expected = " or ".join(f"{{{g}}}" for g in locator.linkages)
        severity = WARNING if ignore_id_mismatch else CORRUPTION
        s.add("parent locator", None, severity, f"the parent {found} has DataWriteGuid {{{actual}}} but the child "
              f"expects {expected}: the parent was modified after the child was made")
    if parent.metadata.logical_sector_size != s.metadata.logical_sector_size:
        s.add("parent locator", None, CORRUPTION, f"the parent has {parent.metadata.logical_sector_size}-byte sectors, "
              f"the child {s.metadata.logical_sector_size}-byte")
    if parent.metadata.virtual_disk_size != s.metadata.virtual_disk_size:
        s.add("parent locator", None, WARNING, f"the parent's virtual size ({parent.metadata.virtual_disk_size}) differs "
              f"from the child's ({s.metadata.virtual_disk_size})")
    return [(found, parent), *chain]
