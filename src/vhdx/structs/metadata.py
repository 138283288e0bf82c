"""The metadata table and the known metadata items (MS-VHDX 2.6)."""

from __future__ import annotations

from construct import Array, Bytes, Const, Int16ul, Int32ul, Int64ul, Padded, Rebuild, Struct, len_, this

from ..constants import METADATA_SIGNATURE, METADATA_TABLE_SIZE
from ._fields import Guid, sizeof

METADATA_TABLE_HEADER = Struct(
    "signature" / Const(METADATA_SIGNATURE),
    "reserved" / Int16ul,
    "entry_count" / Int16ul,
    "reserved2" / Bytes(20),
)
METADATA_TABLE_ENTRY = Struct(
    "item_id" / Guid,
    "offset" / Int32ul,  # from the start of the metadata region
    "length" / Int32ul,
    "flags" / Int32ul,  # IsUser, IsVirtualDisk, IsRequired
    "reserved2" / Int32ul,
)
METADATA_TABLE = Padded(
    METADATA_TABLE_SIZE,
    Struct(
        "signature" / Const(METADATA_SIGNATURE),
        "reserved" / Int16ul,
        "entry_count" / Rebuild(Int16ul, len_(this.entries)),
        "reserved2" / Bytes(20),
        "entries" / Array(this.entry_count, METADATA_TABLE_ENTRY),
    ),
)
METADATA_TABLE_HEADER_SIZE = sizeof(METADATA_TABLE_HEADER)
METADATA_TABLE_ENTRY_SIZE = sizeof(METADATA_TABLE_ENTRY)

# Known items (MS-VHDX 2.6.2.1-2.6.2.5).
FILE_PARAMETERS = Struct("block_size" / Int32ul, "flags" / Int32ul)
VIRTUAL_DISK_SIZE = Struct("virtual_disk_size" / Int64ul)
VIRTUAL_DISK_ID = Struct("virtual_disk_id" / Guid)
LOGICAL_SECTOR_SIZE = Struct("logical_sector_size" / Int32ul)
PHYSICAL_SECTOR_SIZE = Struct("physical_sector_size" / Int32ul)

# Parent locator (MS-VHDX 2.6.2.6): header, KeyValueCount entries, then UTF-16LE strings.
PARENT_LOCATOR_HEADER = Struct(
    "locator_type" / Guid,
    "reserved" / Int16ul,
    "key_value_count" / Int16ul,
)
PARENT_LOCATOR_ENTRY = Struct(
    "key_offset" / Int32ul,  # from the start of the parent locator item
    "value_offset" / Int32ul,
    "key_length" / Int16ul,
    "value_length" / Int16ul,
)
PARENT_LOCATOR_HEADER_SIZE = sizeof(PARENT_LOCATOR_HEADER)
PARENT_LOCATOR_ENTRY_SIZE = sizeof(PARENT_LOCATOR_ENTRY)
