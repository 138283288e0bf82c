"""MBR and GPT structures found inside a virtual disk (not VHDX structures; read to list and
extract partitions). MBR: the classic PC layout; GPT: UEFI 2.10 section 5.3."""

from __future__ import annotations

from construct import Array, Bytes, Int8ul, Int32ul, Int64ul, Struct

from ..constants import GPT_NAME_SIZE, MBR_PARTITION_ENTRIES, MBR_PARTITION_TABLE_OFFSET
from ._fields import Guid, field_offset, sizeof

MBR_PARTITION_ENTRY = Struct(
    "status" / Int8ul,  # 0x80: active (bootable)
    "chs_first" / Bytes(3),
    "type" / Int8ul,
    "chs_last" / Bytes(3),
    "lba_first" / Int32ul,
    "sectors" / Int32ul,
)
MBR = Struct(
    "bootstrap" / Bytes(MBR_PARTITION_TABLE_OFFSET),
    "entries" / Array(MBR_PARTITION_ENTRIES, MBR_PARTITION_ENTRY),
    "signature" / Bytes(2),
)
GPT_HEADER = Struct(
    "signature" / Bytes(8),
    "revision" / Int32ul,
    "header_size" / Int32ul,
    "header_crc32" / Int32ul,  # zlib CRC-32 over header_size bytes with this field zeroed
    "reserved" / Int32ul,
    "current_lba" / Int64ul,
    "backup_lba" / Int64ul,
    "first_usable_lba" / Int64ul,
    "last_usable_lba" / Int64ul,
    "disk_guid" / Guid,
    "entries_lba" / Int64ul,
    "entry_count" / Int32ul,
    "entry_size" / Int32ul,
    "entries_crc32" / Int32ul,
)
GPT_ENTRY = Struct(
    "type_guid" / Guid,
    "unique_guid" / Guid,
    "first_lba" / Int64ul,
    "last_lba" / Int64ul,  # inclusive
    "attributes" / Int64ul,
    "name" / Bytes(GPT_NAME_SIZE),  # UTF-16LE, NUL-padded
)
MBR_ENTRY_SIZE = sizeof(MBR_PARTITION_ENTRY)
GPT_HEADER_SIZE = sizeof(GPT_HEADER)
GPT_HEADER_CRC_OFFSET = field_offset(GPT_HEADER, "header_crc32")
