"""The 64 KiB region table, stored twice (MS-VHDX 2.2.3)."""

from __future__ import annotations

from construct import Array, Const, Int32ul, Int64ul, Padded, Rebuild, Struct, len_, this

from ..constants import REGION_TABLE_SIGNATURE, REGION_TABLE_SIZE
from ._fields import Guid, field_offset, sizeof

REGION_TABLE_HEADER = Struct(
    "signature" / Const(REGION_TABLE_SIGNATURE),
    "checksum" / Int32ul,  # CRC-32C over the whole 64 KiB table with this field zeroed
    "entry_count" / Int32ul,
    "reserved" / Int32ul,
)
REGION_TABLE_ENTRY = Struct(
    "guid" / Guid,
    "file_offset" / Int64ul,
    "length" / Int32ul,
    "flags" / Int32ul,  # bit 0: Required
)
REGION_TABLE = Padded(
    REGION_TABLE_SIZE,
    Struct(
        "signature" / Const(REGION_TABLE_SIGNATURE),
        "checksum" / Int32ul,
        "entry_count" / Rebuild(Int32ul, len_(this.entries)),
        "reserved" / Int32ul,
        "entries" / Array(this.entry_count, REGION_TABLE_ENTRY),
    ),
)
REGION_TABLE_CHECKSUM_OFFSET = field_offset(REGION_TABLE_HEADER, "checksum")
REGION_TABLE_HEADER_SIZE = sizeof(REGION_TABLE_HEADER)
REGION_TABLE_ENTRY_SIZE = sizeof(REGION_TABLE_ENTRY)
