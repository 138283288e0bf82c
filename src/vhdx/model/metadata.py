"""Metadata region model: the table, the known system items, unknown items kept as they are.

References: MS-VHDX 2.6; VHDX-FORMAT.md 7.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ..constants import (
    FILE_PARAMETERS_GUID,
    FILE_PARAMETERS_HAS_PARENT,
    FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED,
    LOGICAL_SECTOR_SIZE_GUID,
    MAX_METADATA_ENTRIES,
    MAX_USER_METADATA_ENTRIES,
    METADATA_FLAG_IS_REQUIRED,
    METADATA_FLAG_IS_USER,
    METADATA_FLAG_IS_VIRTUAL_DISK,
    METADATA_ITEM_MAX_LENGTH,
    METADATA_ITEM_MIN_OFFSET,
    METADATA_TABLE_SIZE,
    PARENT_LOCATOR_GUID,
    PHYSICAL_SECTOR_SIZE_GUID,
    SECTOR_SIZES,
    VIRTUAL_DISK_ID_GUID,
    VIRTUAL_DISK_SIZE_GUID,
)
from ..errors import CorruptStructureError, UnsupportedError
from ..structs.metadata import (
    FILE_PARAMETERS,
    LOGICAL_SECTOR_SIZE,
    METADATA_TABLE,
    METADATA_TABLE_ENTRY_SIZE,
    METADATA_TABLE_HEADER,
    PHYSICAL_SECTOR_SIZE,
    VIRTUAL_DISK_ID,
    VIRTUAL_DISK_SIZE,
)
from ._decode import build_struct, parse_struct
from .geometry import DiskGeometry
from .parent_locator import ParentLocator, parse_parent_locator

# Known system items and the exact length each must have (None: variable).
KNOWN_ITEMS: dict[uuid.UUID, tuple[str, int | None]] = {
    FILE_PARAMETERS_GUID: ("file parameters", FILE_PARAMETERS.sizeof()),
    VIRTUAL_DISK_SIZE_GUID: ("virtual disk size", VIRTUAL_DISK_SIZE.sizeof()),
    VIRTUAL_DISK_ID_GUID: ("virtual disk id", VIRTUAL_DISK_ID.sizeof()),
    LOGICAL_SECTOR_SIZE_GUID: ("logical sector size", LOGICAL_SECTOR_SIZE.sizeof()),
    PHYSICAL_SECTOR_SIZE_GUID: ("physical sector size", PHYSICAL_SECTOR_SIZE.sizeof()),
    PARENT_LOCATOR_GUID: ("parent locator", None),
}
REQUIRED_ITEMS = (FILE_PARAMETERS_GUID, VIRTUAL_DISK_SIZE_GUID, VIRTUAL_DISK_ID_GUID,
                  LOGICAL_SECTOR_SIZE_GUID, PHYSICAL_SECTOR_SIZE_GUID)


@dataclass(frozen=True, slots=True)
class MetadataEntry:
    item_id: uuid.UUID
    offset: int
    length: int
    flags: int

    @property
    def is_user(self) -> bool:
        return bool(self.flags & METADATA_FLAG_IS_USER)

    @property
    def is_virtual_disk(self) -> bool:
        return bool(self.flags & METADATA_FLAG_IS_VIRTUAL_DISK)

    @property
    def is_required(self) -> bool:
        return bool(self.flags & METADATA_FLAG_IS_REQUIRED)


@dataclass(frozen=True, slots=True)
class Metadata:
    """The decoded metadata region."""

    block_size: int
    file_parameter_flags: int
    virtual_disk_size: int
    virtual_disk_id: uuid.UUID
    logical_sector_size: int
    physical_sector_size: int
    parent_locator: ParentLocator | None
    # Every table entry, known or not: unknown items are kept when the region is rewritten.
    entries: tuple[MetadataEntry, ...] = ()

    @property
    def leave_block_allocated(self) -> bool:
        return bool(self.file_parameter_flags & FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED)

    @property
    def has_parent(self) -> bool:
        return bool(self.file_parameter_flags & FILE_PARAMETERS_HAS_PARENT)

    def geometry(self) -> DiskGeometry:
        return DiskGeometry(self.virtual_disk_size, self.block_size, self.logical_sector_size)


def parse_metadata_table(table: bytes | bytearray | memoryview, region_offset: int, region_length: int) -> tuple[MetadataEntry, ...]:
    """Decode and validate the 64 KiB metadata table at the start of the metadata region.

    Raises:
        SignatureError, TruncatedError, CorruptStructureError: the bytes break MS-VHDX 2.6.1.
        UnsupportedError: an unknown item is marked IsRequired.
    """
    name = "metadata table"
    head = parse_struct(METADATA_TABLE_HEADER, table[: METADATA_TABLE_HEADER.sizeof()], structure=name, offset=region_offset)
    if head.entry_count > MAX_METADATA_ENTRIES:
        raise CorruptStructureError(f"entry count {head.entry_count} is over {MAX_METADATA_ENTRIES}",
                                    structure=name, offset=region_offset)
    parsed = parse_struct(METADATA_TABLE, table[:METADATA_TABLE_SIZE], structure=name, offset=region_offset)
    entries = tuple(MetadataEntry(e.item_id, e.offset, e.length, e.flags) for e in parsed.entries)
    seen: set[tuple[uuid.UUID, bool]] = set()
    spans: list[tuple[int, int, uuid.UUID]] = []
    user_count = 0
    for i, entry in enumerate(entries):
        where = region_offset + METADATA_TABLE_HEADER.sizeof() + METADATA_TABLE_ENTRY_SIZE * i
        key = (entry.item_id, entry.is_user)
        if key in seen:
            raise CorruptStructureError(f"item {entry.item_id} is listed twice", structure="metadata entry", offset=where)
        seen.add(key)
        user_count += entry.is_user
        if entry.length > METADATA_ITEM_MAX_LENGTH:
            raise CorruptStructureError(f"item {entry.item_id} is {entry.length} bytes (over 1 MiB)",
                                        structure="metadata entry", offset=where)
        if entry.length == 0:
            if entry.offset != 0:
                raise CorruptStructureError(f"empty item {entry.item_id} has a non-zero offset",
                                            structure="metadata entry", offset=where)
        else:
            if entry.offset < METADATA_ITEM_MIN_OFFSET or entry.offset + entry.length > region_length:
                raise CorruptStructureError(
                    f"item {entry.item_id} at region offset 0x{entry.offset:x} length 0x{entry.length:x} "
                    f"lies outside the metadata region", structure="metadata entry", offset=where)
            spans.append((entry.offset, entry.offset + entry.length, entry.item_id))
        if not entry.is_user and entry.item_id in KNOWN_ITEMS:
            label, size = KNOWN_ITEMS[entry.item_id]
            if size is not None and entry.length != size:
                raise CorruptStructureError(f"{label} item is {entry.length} bytes, expected {size}",
                                            structure="metadata entry", offset=where)
        elif entry.is_required:
            raise UnsupportedError(f"unknown required metadata item {entry.item_id}",
                                   structure="metadata entry", offset=where)
    if user_count > MAX_USER_METADATA_ENTRIES:
        raise CorruptStructureError(f"{user_count} user metadata items (at most {MAX_USER_METADATA_ENTRIES})",
                                    structure=name, offset=region_offset)
    spans.sort()
    for (_s1, e1, id1), (s2, _e2, id2) in zip(spans, spans[1:]):
        if s2 < e1:
            raise CorruptStructureError(f"metadata items {id1} and {id2} overlap", structure=name, offset=region_offset)
    known = {e.item_id for e in entries if not e.is_user}
    for item in REQUIRED_ITEMS:
        if item not in known:
            raise CorruptStructureError(f"the {KNOWN_ITEMS[item][0]} item is missing", structure=name, offset=region_offset)
    return entries


def known_entries(entries: tuple[MetadataEntry, ...]) -> dict[uuid.UUID, MetadataEntry]:
    """The system items we understand, by item id (what a reader has to load)."""
    return {e.item_id: e for e in entries if not e.is_user and e.item_id in KNOWN_ITEMS}


def decode_metadata(entries: tuple[MetadataEntry, ...], values: dict[uuid.UUID, bytes], region_offset: int) -> Metadata:
    """Decode the known items (``values``: item id -> bytes, as listed by ``known_entries``).

    Raises:
        CorruptStructureError: a value is out of range, or the parent locator is missing or broken.
        UnsupportedError: the parent locator type is unknown.
    """
    known = known_entries(entries)

    def parse(con: Any, guid: uuid.UUID, label: str) -> Any:
        return parse_struct(con, values[guid], structure=label, offset=region_offset + known[guid].offset)

    fp = parse(FILE_PARAMETERS, FILE_PARAMETERS_GUID, "file parameters")
    size = parse(VIRTUAL_DISK_SIZE, VIRTUAL_DISK_SIZE_GUID, "virtual disk size").virtual_disk_size
    disk_id = parse(VIRTUAL_DISK_ID, VIRTUAL_DISK_ID_GUID, "virtual disk id").virtual_disk_id
    logical = parse(LOGICAL_SECTOR_SIZE, LOGICAL_SECTOR_SIZE_GUID, "logical sector size").logical_sector_size
    physical = parse(PHYSICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE_GUID, "physical sector size").physical_sector_size
    if physical not in SECTOR_SIZES:
        raise CorruptStructureError(f"physical sector size {physical} is not 512 or 4096", structure="physical sector size",
                                    offset=region_offset + known[PHYSICAL_SECTOR_SIZE_GUID].offset)
    locator = None
    if fp.flags & FILE_PARAMETERS_HAS_PARENT:
        if PARENT_LOCATOR_GUID not in known:
            raise CorruptStructureError("differencing disk without a parent locator item", structure="metadata table",
                                        offset=region_offset)
        locator = parse_parent_locator(values[PARENT_LOCATOR_GUID], region_offset + known[PARENT_LOCATOR_GUID].offset)
    metadata = Metadata(
        block_size=fp.block_size,
        file_parameter_flags=fp.flags,
        virtual_disk_size=size,
        virtual_disk_id=disk_id,
        logical_sector_size=logical,
        physical_sector_size=physical,
        parent_locator=locator,
        entries=entries,
    )
    try:
        metadata.geometry()
    except CorruptStructureError as err:
        raise CorruptStructureError(err.message, structure="metadata", offset=region_offset) from None
    return metadata


def parse_metadata_region(region: bytes | bytearray | memoryview, region_offset: int) -> Metadata:
    """Decode a whole metadata region held in memory (table, then the known items)."""
    entries = parse_metadata_table(region[:METADATA_TABLE_SIZE], region_offset, len(region))
    values = {guid: bytes(region[e.offset : e.offset + e.length]) for guid, e in known_entries(entries).items()}
    return decode_metadata(entries, values, region_offset)


@dataclass(frozen=True, slots=True)
class MetadataItem:
    """One item to lay out in a new metadata region."""

    item_id: uuid.UUID
    data: bytes
    flags: int


def system_items(metadata: Metadata, locator_bytes: bytes | None = None) -> list[MetadataItem]:
    """Return the known items of ``metadata`` in QEMU's order (VHDX-FORMAT.md 7.4), then the locator."""
    virtual_disk = METADATA_FLAG_IS_VIRTUAL_DISK | METADATA_FLAG_IS_REQUIRED
    items = [
        MetadataItem(FILE_PARAMETERS_GUID, build_struct(FILE_PARAMETERS, {"block_size": metadata.block_size,
                                                                           "flags": metadata.file_parameter_flags}),
                     METADATA_FLAG_IS_REQUIRED),
        MetadataItem(VIRTUAL_DISK_SIZE_GUID, build_struct(VIRTUAL_DISK_SIZE, {"virtual_disk_size": metadata.virtual_disk_size}),
                     virtual_disk),
        MetadataItem(VIRTUAL_DISK_ID_GUID, build_struct(VIRTUAL_DISK_ID, {"virtual_disk_id": metadata.virtual_disk_id}),
                     virtual_disk),
        MetadataItem(LOGICAL_SECTOR_SIZE_GUID,
                     build_struct(LOGICAL_SECTOR_SIZE, {"logical_sector_size": metadata.logical_sector_size}), virtual_disk),
        MetadataItem(PHYSICAL_SECTOR_SIZE_GUID,
                     build_struct(PHYSICAL_SECTOR_SIZE, {"physical_sector_size": metadata.physical_sector_size}), virtual_disk),
    ]
    if locator_bytes is not None:
        items.append(MetadataItem(PARENT_LOCATOR_GUID, locator_bytes, METADATA_FLAG_IS_REQUIRED))
    return items


def build_metadata_region(items: list[MetadataItem], region_length: int) -> bytes:
    """Lay out ``items`` back to back from offset 64 KiB and return the whole region's bytes."""
    entries = []
    payload = bytearray()
    for item in items:
        offset = METADATA_ITEM_MIN_OFFSET + len(payload) if item.data else 0
        entries.append({"item_id": item.item_id, "offset": offset, "length": len(item.data),
                        "flags": item.flags, "reserved2": 0})
        payload += item.data
    if METADATA_ITEM_MIN_OFFSET + len(payload) > region_length:
        raise ValueError("metadata items do not fit in the metadata region")
    table = build_struct(METADATA_TABLE, {"reserved": 0, "reserved2": bytes(20), "entries": entries})
    region = bytearray(region_length)
    region[: len(table)] = table
    region[METADATA_ITEM_MIN_OFFSET : METADATA_ITEM_MIN_OFFSET + len(payload)] = payload
    return bytes(region)
