"""Log entry header, descriptors and data sectors (MS-VHDX 2.3.1)."""

from __future__ import annotations

import numpy as np
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

# The descriptors of an entry in bulk (one numpy record each; both kinds share the layout of the
# signature, FileOffset and SequenceNumber fields, and ``length`` is a zero descriptor's
# ZeroLength), so that a log packed with thousands of descriptors is not parsed one construct
# call at a time.
DESCRIPTOR_DTYPE = np.dtype({
    "names": ["signature", "length", "file_offset", "sequence_number"],
    "formats": ["S4", "<u8", "<u8", "<u8"],
    "offsets": [field_offset(ZERO_DESCRIPTOR, "signature"), field_offset(ZERO_DESCRIPTOR, "zero_length"),
                field_offset(ZERO_DESCRIPTOR, "file_offset"), field_offset(ZERO_DESCRIPTOR, "sequence_number")],
    "itemsize": DESCRIPTOR_SIZE,
})
assert all(field_offset(DATA_DESCRIPTOR, name) == field_offset(ZERO_DESCRIPTOR, name)
           for name in ("file_offset", "sequence_number"))
DATA_DESCRIPTOR_TRAILING_OFFSET = field_offset(DATA_DESCRIPTOR, "trailing_bytes")
DATA_DESCRIPTOR_LEADING_OFFSET = field_offset(DATA_DESCRIPTOR, "leading_bytes")
DATA_SECTOR_SEQUENCE_HIGH_OFFSET = field_offset(DATA_SECTOR, "sequence_high")
DATA_SECTOR_DATA_OFFSET = field_offset(DATA_SECTOR, "data")
DATA_SECTOR_SEQUENCE_LOW_OFFSET = field_offset(DATA_SECTOR, "sequence_low")
