"""The 4 KiB header structure, stored twice (MS-VHDX 2.2.2)."""

from __future__ import annotations

from construct import Const, Int16ul, Int32ul, Int64ul, Padded, Struct

from ..constants import HEADER_SIGNATURE, HEADER_SIZE
from ._fields import Guid, field_offset

HEADER_FIELDS = Struct(
    "signature" / Const(HEADER_SIGNATURE),
    "checksum" / Int32ul,  # CRC-32C over HEADER_SIZE bytes with this field zeroed
    "sequence_number" / Int64ul,
    "file_write_guid" / Guid,
    "data_write_guid" / Guid,
    "log_guid" / Guid,
    "log_version" / Int16ul,
    "version" / Int16ul,
    "log_length" / Int32ul,
    "log_offset" / Int64ul,
)
# The reserved tail (4016 bytes) is covered by the checksum and written as zeros.
HEADER = Padded(HEADER_SIZE, HEADER_FIELDS)
HEADER_CHECKSUM_OFFSET = field_offset(HEADER_FIELDS, "checksum")
