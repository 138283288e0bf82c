"""Region table model: decode, the required-region rules, overlap checks, encode.

References: MS-VHDX 2.2.3; VHDX-FORMAT.md 6.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from .. import checksum
from ..constants import (
    BAT_REGION_GUID,
    HEADER_SECTION_SIZE,
    MAX_REGION_ENTRIES,
    METADATA_REGION_GUID,
    OBJECT_ALIGNMENT,
    REGION_REQUIRED_FLAG,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    REGION_TABLE_SIZE,
)
from ..errors import ChecksumError, CorruptStructureError, TruncatedError, UnsupportedError
from ..structs.region_table import (
    REGION_TABLE,
    REGION_TABLE_CHECKSUM_OFFSET,
    REGION_TABLE_HEADER,
)
from ._decode import build_struct, parse_struct

REGION_TABLE_OFFSETS = (REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET)
KNOWN_REGIONS = {BAT_REGION_GUID: "BAT", METADATA_REGION_GUID: "metadata"}


@dataclass(frozen=True, slots=True)
class RegionTableEntry:
    guid: uuid.UUID
    file_offset: int
    length: int
    required: bool
    flags: int = 0

    @property
    def name(self) -> str:
        return KNOWN_REGIONS.get(self.guid, f"region {self.guid}")

    @property
    def end(self) -> int:
        return self.file_offset + self.length


@dataclass(frozen=True, slots=True)
class RegionTable:
    entries: tuple[RegionTableEntry, ...]

    def find(self, guid: uuid.UUID) -> RegionTableEntry:
        for entry in self.entries:
            if entry.guid == guid:
                return entry
        raise KeyError(guid)

    @property
    def bat(self) -> RegionTableEntry:
        return self.find(BAT_REGION_GUID)

    @property
    def metadata(self) -> RegionTableEntry:
        return self.find(METADATA_REGION_GUID)


def parse_region_table(raw: bytes | bytearray | memoryview, offset: int) -> RegionTable:
    """Decode, checksum-verify and validate the region table stored at ``offset``.

    Raises:
        SignatureError, TruncatedError, ChecksumError, CorruptStructureError, UnsupportedError.
    """
    name = f"region table {REGION_TABLE_OFFSETS.index(offset) + 1}" if offset in REGION_TABLE_OFFSETS else "region table"
    head = parse_struct(REGION_TABLE_HEADER, raw[: REGION_TABLE_HEADER.sizeof()], structure=name, offset=offset)
    if len(raw) < REGION_TABLE_SIZE:
        raise TruncatedError(f"region table is {len(raw)} bytes, not {REGION_TABLE_SIZE}", structure=name, offset=offset)
    if not checksum.verify(raw[:REGION_TABLE_SIZE], REGION_TABLE_CHECKSUM_OFFSET):
        raise ChecksumError(
            f"checksum mismatch (stored 0x{head.checksum:08x}, computed "
            f"0x{checksum.compute(raw[:REGION_TABLE_SIZE], REGION_TABLE_CHECKSUM_OFFSET):08x})",
            structure=name, offset=offset)
    if head.entry_count > MAX_REGION_ENTRIES:
        raise CorruptStructureError(f"entry count {head.entry_count} is over {MAX_REGION_ENTRIES}",
                                    structure=name, offset=offset)
    table = parse_struct(REGION_TABLE, raw[:REGION_TABLE_SIZE], structure=name, offset=offset)
    entries = tuple(
        RegionTableEntry(e.guid, e.file_offset, e.length, bool(e.flags & REGION_REQUIRED_FLAG), e.flags)
        for e in table.entries
    )
    result = RegionTable(entries)
    validate_region_table(result, name, offset)
    return result


def validate_region_table(table: RegionTable, name: str = "region table", offset: int = REGION_TABLE_1_OFFSET) -> None:
    """Apply the reader rules of VHDX-FORMAT.md 6.3 that need only the table itself."""
    seen: set[uuid.UUID] = set()
    for entry in table.entries:
        if entry.guid in seen:
            raise CorruptStructureError(f"{entry.name} region is listed twice", structure=name, offset=offset)
        seen.add(entry.guid)
        if entry.guid not in KNOWN_REGIONS and entry.required:
            raise UnsupportedError(f"unknown required region {entry.guid}", structure=name, offset=offset)
        if entry.file_offset % OBJECT_ALIGNMENT or entry.length % OBJECT_ALIGNMENT:
            raise CorruptStructureError(
                f"{entry.name} region at 0x{entry.file_offset:x} length 0x{entry.length:x} is not 1 MiB aligned",
                structure=name, offset=offset)
        if entry.file_offset < HEADER_SECTION_SIZE:
            raise CorruptStructureError(f"{entry.name} region at 0x{entry.file_offset:x} overlaps the header section",
                                        structure=name, offset=offset)
        if entry.length == 0 and entry.guid in KNOWN_REGIONS:
            raise CorruptStructureError(f"{entry.name} region is empty", structure=name, offset=offset)
    for guid, label in KNOWN_REGIONS.items():
        if guid not in seen:
            raise CorruptStructureError(f"the {label} region is missing", structure=name, offset=offset)
    ordered = sorted(table.entries, key=lambda e: e.file_offset)
    for a, b in zip(ordered, ordered[1:]):
        if b.file_offset < a.end:
            raise CorruptStructureError(f"{a.name} region and {b.name} region overlap", structure=name, offset=offset)


def build_region_table(table: RegionTable) -> bytes:
    """Return the 64 KiB on-disk table with its checksum computed."""
    value = {
        "checksum": 0,
        "reserved": 0,
        "entries": [
            {"guid": e.guid, "file_offset": e.file_offset, "length": e.length,
             "flags": e.flags | (REGION_REQUIRED_FLAG if e.required else 0)}
            for e in table.entries
        ],
    }
    buf = bytearray(build_struct(REGION_TABLE, value))
    checksum.seal(buf, REGION_TABLE_CHECKSUM_OFFSET)
    return bytes(buf)
