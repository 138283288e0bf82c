"""Loading one VHDX file: identifier, headers, log, region tables, metadata and BAT, in the order
the format requires (the log is replayed before the region table is read, MS-VHDX 2.3.3).

A read-only load replays a pending log into an in-memory ``OverlaySource`` and never writes.

References: MS-VHDX 2.2-2.6; VHDX-FORMAT.md 4-10.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ..constants import (
    BAT_ENTRY_SIZE,
    FILE_IDENTIFIER_OFFSET,
    FILE_IDENTIFIER_SIGNATURE,
    FILE_IDENTIFIER_SIZE,
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    HEADER_SECTION_SIZE,
    HEADER_SIZE,
    MAX_FILE_SIZE,
    METADATA_TABLE_SIZE,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    REGION_TABLE_SIZE,
    SectorBitmapState,
)
from ..errors import CorruptStructureError, FormatError, LogReplayError, SignatureError, TruncatedError, VhdxError
from ..model import bat as bat_model
from ..model._decode import parse_struct
from ..model.geometry import DiskGeometry
from ..model.header import HeaderChoice, select_current
from ..model.log import LogScan, ZeroWrite, scan_log, validate_active
from ..model.metadata import Metadata, decode_metadata, known_entries, parse_metadata_table
from ..model.region_table import RegionTable, parse_region_table
from ..structs import bat as bat_struct
from ..structs.file_identifier import FILE_IDENTIFIER
from .source import OverlaySource, RandomAccess, read_exact


@dataclass
class Image:
    """Everything decoded from one file, plus what was tolerated on the way."""

    source: RandomAccess  # what reads go through (an overlay when a log was replayed in memory)
    raw_source: RandomAccess  # the file itself
    creator: str
    headers: HeaderChoice
    region_table: RegionTable
    region_table_index: int
    metadata: Metadata
    geometry: DiskGeometry
    bat: npt.NDArray[np.uint64]  # every BAT entry read (payload and sector bitmap slots)
    view: bat_model.BatView
    log: LogScan | None
    log_replayed_in_memory: bool
    file_size: int
    problems: list[str] = field(default_factory=list)  # tolerated damage and oddities
    # The part of ``problems`` a writer must not build on (a writable open refuses it): damage no
    # crash of a conforming writer leaves behind. A torn header, a LogGuid without entries and a
    # partial last block are not in it: the first two are crash states that the session's header
    # update repairs, the last is how QEMU writes fixed images.
    damage: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.raw_source.name

    @property
    def disk_type(self) -> str:
        if self.metadata.has_parent:
            return "differencing"
        return "fixed" if self.metadata.leave_block_allocated else "dynamic"


def load_image(source: RandomAccess) -> Image:
    """Decode the file behind ``source`` for reading (any pending log is replayed in memory).

    Raises:
        VhdxError subclasses naming the file, the structure and the offset.
    """
    try:
        return _load(source)
    except VhdxError as err:
        raise err.with_image(source.name)


def _load(raw: RandomAccess) -> Image:
    problems: list[str] = []
    damage: list[str] = []
    size = raw.size()
    ident_raw = _read_upto(raw, FILE_IDENTIFIER_OFFSET, FILE_IDENTIFIER_SIZE, size)
    if len(ident_raw) < len(FILE_IDENTIFIER_SIGNATURE) or ident_raw[: len(FILE_IDENTIFIER_SIGNATURE)] != FILE_IDENTIFIER_SIGNATURE:
        raise SignatureError("not a VHDX file (no 'vhdxfile' signature)", structure="file identifier", offset=0)
    if size < HEADER_SECTION_SIZE:
        raise TruncatedError(f"file is only 0x{size:x} bytes, shorter than the 1 MiB header section",
                             structure="header section", offset=0)
    if size > MAX_FILE_SIZE:
        # No valid image gets this large (see MAX_FILE_SIZE); refusing it up front keeps every
        # later size computation within the bounds the README documents.
        raise CorruptStructureError(f"file is 0x{size:x} bytes, larger than any valid VHDX (0x{MAX_FILE_SIZE:x})",
                                    structure="file", offset=0)
    ident = parse_struct(FILE_IDENTIFIER, ident_raw, structure="file identifier", offset=FILE_IDENTIFIER_OFFSET)
    creator = ident.creator.split("\0", 1)[0]

    h1 = _read_upto(raw, HEADER_1_OFFSET, HEADER_SIZE, size)
    h2 = _read_upto(raw, HEADER_2_OFFSET, HEADER_SIZE, size)
    headers = select_current(h1, h2)
    for err in headers.problems:
        problems.append(f"{err.structure} is unusable ({err.message}); using header {headers.current_index + 1}")
    header = headers.current

    # --- the log (MS-VHDX 2.3.3): replay before anything else is parsed -------------------
    source: RandomAccess = raw
    log: LogScan | None = None
    replayed = False
    if not header.log_is_empty:
        log_end = header.log_offset + header.log_length
        if log_end > size:
            raise TruncatedError(f"the log (0x{header.log_offset:x}-0x{log_end:x}) lies past the end of the file",
                                 structure="log", offset=header.log_offset)
        log_bytes = read_exact(raw, header.log_offset, header.log_length, "log")
        log = scan_log(log_bytes, header.log_guid, header.log_offset)
        if log.head is None:
            # The spec calls this corrupt; QEMU treats it as nothing to replay. A writer that died
            # between setting LogGuid and finishing its first entry leaves exactly this state.
            problems.append("the log GUID is set but the log holds no complete sequence; nothing to replay")
        else:
            head = log.head
            if head.last_file_offset > MAX_FILE_SIZE:
                raise LogReplayError(f"log entry claims a file size of 0x{head.last_file_offset:x}",
                                     structure="log entry", offset=header.log_offset + head.log_offset)
            validate_active(log, size, header.log_offset, header.log_length, header.log_offset)
            overlay = OverlaySource(raw, min_size=head.last_file_offset)
            writes: list[tuple[int, bytes | None, int]] = []
            for entry in log.active:
                for w in entry.writes:
                    if isinstance(w, ZeroWrite):
                        if w.file_offset + w.length > MAX_FILE_SIZE:
                            raise LogReplayError(f"zero descriptor covers 0x{w.file_offset:x}+0x{w.length:x}",
                                                 structure="log entry", offset=header.log_offset + entry.log_offset)
                        writes.append((w.file_offset, None, w.length))
                    else:
                        writes.append((w.file_offset, w.data, len(w.data)))
            overlay.add_many(writes)
            source = overlay
            replayed = True
            size = overlay.size()

    # --- region table (6.3): copy 1 if valid, else copy 2 ---------------------------------------
    tables: list[RegionTable | None] = []
    errors: list[FormatError] = []
    for offset in (REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET):
        try:
            tables.append(parse_region_table(_read_upto(source, offset, REGION_TABLE_SIZE, size), offset))
        except FormatError as err:
            tables.append(None)
            errors.append(err)
    if tables[0] is not None:
        region_table, region_index = tables[0], 0
        if tables[1] is None:
            problems.append(f"region table 2 is unusable ({errors[0].message})")
            damage.append(problems[-1])
    elif tables[1] is not None:
        region_table, region_index = tables[1], 1
        problems.append(f"region table 1 is unusable ({errors[0].message}); using region table 2")
        damage.append(problems[-1])
    else:
        raise errors[0]
    regions = [(e.file_offset, e.end, f"{e.name} region") for e in region_table.entries]
    if header.log_length:
        log_range = (header.log_offset, header.log_offset + header.log_length, "log")
        for start, end, name in regions:
            if start < log_range[1] and end > log_range[0]:
                raise CorruptStructureError(f"the {name} overlaps the log", structure=f"region table {region_index + 1}",
                                            offset=(REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET)[region_index])
        regions.append(log_range)
    for start, end, name in regions:
        if end > size:
            raise TruncatedError(f"the {name} (0x{start:x}-0x{end:x}) lies past the end of the file (0x{size:x})",
                                 structure=name, offset=start)

    # --- metadata (7) -----------------------------------------------------------------------------
    meta_region = region_table.metadata
    table_raw = read_exact(source, meta_region.file_offset, min(METADATA_TABLE_SIZE, meta_region.length), "metadata table")
    entries = parse_metadata_table(table_raw, meta_region.file_offset, meta_region.length)
    values = {
        guid: read_exact(source, meta_region.file_offset + e.offset, e.length, "metadata item")
        for guid, e in known_entries(entries).items()
    }
    metadata = decode_metadata(entries, values, meta_region.file_offset)
    geometry = metadata.geometry()

    # --- BAT (8) ----------------------------------------------------------------------------------------
    bat_region = region_table.bat
    needed = geometry.bat_entry_count
    if needed * BAT_ENTRY_SIZE > bat_region.length:
        raise CorruptStructureError(
            f"BAT region holds {bat_region.length // BAT_ENTRY_SIZE} entries but the disk needs {needed}",
            structure="BAT", offset=bat_region.file_offset)
    count = min(geometry.bat_entry_count_full, bat_region.length // BAT_ENTRY_SIZE)
    bat = _read_bat(source, bat_region.file_offset, count)
    view = bat_model.split(bat, geometry)
    reserved = [(0, HEADER_SECTION_SIZE, "header section")] + regions
    problems += bat_model.validate(view, geometry, differencing=metadata.has_parent, file_size=size,
                                   reserved=reserved, bat_offset=bat_region.file_offset)
    if not metadata.has_parent and np.any(view.bitmap_states == SectorBitmapState.PRESENT):
        damage.append("sector bitmap blocks are marked present in a disk without a parent (MS-VHDX 2.5.1.2)")
    return Image(
        source=source,
        raw_source=raw,
        creator=creator,
        headers=headers,
        region_table=region_table,
        region_table_index=region_index,
        metadata=metadata,
        geometry=geometry,
        bat=bat,
        view=view,
        log=log,
        log_replayed_in_memory=replayed,
        file_size=size,
        problems=problems,
        damage=damage,
    )


def _read_bat(source: RandomAccess, offset: int, count: int) -> npt.NDArray[np.uint64]:
    """Read ``count`` BAT entries straight into a numpy array.

    The BAT of a 64 TiB disk is many MiB: reading into the array (rather than through bytes and
    ``bat_struct.parse``) saves two full copies; on a little-endian host the on-disk layout is
    already the native one and no conversion is needed.
    """
    raw = np.empty(count, dtype=bat_struct.BAT_DTYPE)
    length = count * BAT_ENTRY_SIZE
    got = source.readinto(offset, memoryview(raw.view(np.uint8)))
    if got != length:
        raise TruncatedError(f"file ends at 0x{offset + got:x}, inside the BAT (0x{offset:x}-0x{offset + length:x})",
                             image=source.name, structure="BAT", offset=offset)
    return raw.astype(np.uint64, copy=False)


def _read_upto(source: RandomAccess, offset: int, length: int, size: int) -> bytes:
    """Read up to ``length`` bytes (fewer at the end of the file; parsing then reports truncation)."""
    length = max(0, min(length, size - offset))
    buf = bytearray(length)
    got = source.readinto(offset, memoryview(buf))
    return bytes(buf[:got])

