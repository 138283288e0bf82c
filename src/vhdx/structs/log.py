"""Log entry header, descriptors and data sectors (MS-VHDX 2.3.1)."""

from __future__ import annotations

from construct import Bytes, Const, Int32ul, Int64ul, Struct

from ..constants import (
    LOG_DATA_DESCRIPTOR_SIGNATURE,
    LOG_DATA_LEADING_SIZE,
    LOG_DATA_SECTOR_SIGNATURE,
    LOG_DATA_TRAILING_SIZE,
    LOG_ENTRY_SIGNATURE,
    LOG_SECTOR_SIZE,
    LOG_ZERO_DESCRIPTOR_SIGNATURE,
)
from ._fields import Guid, field_offset, sizeof

LOG_ENTRY_HEADER = Struct(
    "signature" / Const(LOG_ENTRY_SIGNATURE),
    "checksum" / Int32ul,  # CRC-32C over EntryLength bytes (read circularly) with this field zeroed
    "entry_length" / Int32ul,
    "tail" / Int32ul,
    "sequence_number" / Int64ul,
    "descriptor_count" / Int32ul,
    "reserved" / Int32ul,
    "log_guid" / Guid,
    "flushed_file_offset" / Int64ul,
    "last_file_offset" / Int64ul,
)
LOG_ENTRY_CHECKSUM_OFFSET = field_offset(LOG_ENTRY_HEADER, "checksum")

ZERO_DESCRIPTOR = Struct(
    "signature" / Const(LOG_ZERO_DESCRIPTOR_SIGNATURE),
    "reserved" / Int32ul,
    "zero_length" / Int64ul,
    "file_offset" / Int64ul,
    "sequence_number" / Int64ul,
)
DATA_DESCRIPTOR = Struct(
    "signature" / Const(LOG_DATA_DESCRIPTOR_SIGNATURE),
    "trailing_bytes" / Bytes(LOG_DATA_TRAILING_SIZE),
    "leading_bytes" / Bytes(LOG_DATA_LEADING_SIZE),
    "file_offset" / Int64ul,
    "sequence_number" / Int64ul,
)
DATA_SECTOR = Struct(
    "signature" / Const(LOG_DATA_SECTOR_SIGNATURE),
    "sequence_high" / Int32ul,
    "data" / Bytes(LOG_SECTOR_SIZE - 8 - LOG_DATA_TRAILING_SIZE),
    "sequence_low" / Int32ul,
)
LOG_ENTRY_HEADER_SIZE = sizeof(LOG_ENTRY_HEADER)
DESCRIPTOR_SIZE = sizeof(ZERO_DESCRIPTOR)
