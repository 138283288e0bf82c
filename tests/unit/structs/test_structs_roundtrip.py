"""Layer 1: every construct structure round-trips (parse(build(x)) == x, build(parse(b)) == b), has
the size and field offsets the spec tables give, and rejects a wrong signature and short input.
"""

from __future__ import annotations

import uuid
from typing import Any

import construct
import pytest

from vhdx import constants
from vhdx.structs._fields import field_offset, sizeof
from vhdx.structs.file_identifier import FILE_IDENTIFIER, FILE_IDENTIFIER_FIELDS
from vhdx.structs.header import HEADER, HEADER_CHECKSUM_OFFSET, HEADER_FIELDS
from vhdx.structs.log import (
    DATA_DESCRIPTOR,
    DATA_SECTOR,
    DESCRIPTOR_SIZE,
    LOG_ENTRY_CHECKSUM_OFFSET,
    LOG_ENTRY_HEADER,
    LOG_ENTRY_HEADER_SIZE,
    ZERO_DESCRIPTOR,
)
from vhdx.structs.metadata import (
    FILE_PARAMETERS,
    LOGICAL_SECTOR_SIZE,
    METADATA_TABLE,
    METADATA_TABLE_ENTRY,
    METADATA_TABLE_ENTRY_SIZE,
    METADATA_TABLE_HEADER,
    METADATA_TABLE_HEADER_SIZE,
    PARENT_LOCATOR_ENTRY,
    PARENT_LOCATOR_ENTRY_SIZE,
    PARENT_LOCATOR_HEADER,
    PARENT_LOCATOR_HEADER_SIZE,
    PHYSICAL_SECTOR_SIZE,
    VIRTUAL_DISK_ID,
    VIRTUAL_DISK_SIZE,
)
from vhdx.structs.region_table import (
    REGION_TABLE,
    REGION_TABLE_CHECKSUM_OFFSET,
    REGION_TABLE_ENTRY,
    REGION_TABLE_ENTRY_SIZE,
    REGION_TABLE_HEADER,
    REGION_TABLE_HEADER_SIZE,
)

G1 = uuid.UUID("6b1f4c8e-2d3a-4f5b-9c7d-0e1f2a3b4c5d")
G2 = uuid.UUID("a1b2c3d4-e5f6-4789-8abc-def012345678")
G3 = uuid.UUID("0f0e0d0c-0b0a-4908-8706-050403020100")


def assert_roundtrip(con: construct.Construct, value: dict[str, Any], size: int | None = None) -> bytes:
    """Build ``value``, parse it back, compare every given field, rebuild identically."""
    built = con.build(value)
    if size is not None:
        assert len(built) == size
        assert con.sizeof() == size
    parsed = con.parse(built)
    for key, expected in value.items():
        got = parsed[key]
        if isinstance(expected, list):
            assert [dict((k, v) for k, v in g.items() if k != "_io") for g in got] == expected, key
        else:
            assert got == expected, key
    assert con.build(parsed) == built
    return built


# (name, construct, value, size per the spec tables, signature offset or None)
CASES: list[tuple[str, construct.Construct, dict[str, Any], int, int | None]] = [
    ("file identifier", FILE_IDENTIFIER, dict(creator="QEMU v7.2.22"), 64 * 1024, 0),
    ("header", HEADER, dict(checksum=0xDEADBEEF, sequence_number=(1 << 64) - 1, file_write_guid=G1,
                            data_write_guid=G2, log_guid=G3, log_version=0, version=1,
                            log_length=0xFFF00000, log_offset=1 << 50), 4096, 0),
    ("region table header", REGION_TABLE_HEADER, dict(checksum=1, entry_count=2047, reserved=0), 16, 0),
    ("region table entry", REGION_TABLE_ENTRY, dict(guid=G1, file_offset=3 << 20, length=1 << 20, flags=1), 32, None),
    ("region table", REGION_TABLE, dict(checksum=5, reserved=0, entries=[
        dict(guid=G1, file_offset=1 << 20, length=1 << 20, flags=1),
        dict(guid=G2, file_offset=2 << 20, length=3 << 20, flags=0)]), 64 * 1024, 0),
    ("metadata table header", METADATA_TABLE_HEADER, dict(reserved=0, entry_count=5, reserved2=bytes(20)), 32, 0),
    ("metadata table entry", METADATA_TABLE_ENTRY, dict(item_id=G2, offset=0x10000, length=8, flags=6, reserved2=0),
     32, None),
    ("metadata table", METADATA_TABLE, dict(reserved=0, reserved2=bytes(20), entries=[
        dict(item_id=G1, offset=0x10000, length=8, flags=4, reserved2=0),
        dict(item_id=G3, offset=0, length=0, flags=1, reserved2=0)]), 64 * 1024, 0),
    ("file parameters", FILE_PARAMETERS, dict(block_size=32 << 20, flags=3), 8, None),
    ("virtual disk size", VIRTUAL_DISK_SIZE, dict(virtual_disk_size=64 << 40), 8, None),
    ("virtual disk id", VIRTUAL_DISK_ID, dict(virtual_disk_id=G3), 16, None),
    ("logical sector size", LOGICAL_SECTOR_SIZE, dict(logical_sector_size=4096), 4, None),
    ("physical sector size", PHYSICAL_SECTOR_SIZE, dict(physical_sector_size=512), 4, None),
    ("parent locator header", PARENT_LOCATOR_HEADER, dict(locator_type=G1, reserved=0, key_value_count=5), 20, None),
    ("parent locator entry", PARENT_LOCATOR_ENTRY, dict(key_offset=80, value_offset=108, key_length=28,
                                                        value_length=76), 12, None),
    ("log entry header", LOG_ENTRY_HEADER, dict(checksum=9, entry_length=8192, tail=4096, sequence_number=1 << 40,
                                                descriptor_count=3, reserved=0, log_guid=G2,
                                                flushed_file_offset=5 << 20, last_file_offset=6 << 20), 64, 0),
    ("zero descriptor", ZERO_DESCRIPTOR, dict(reserved=0, zero_length=1 << 20, file_offset=4 << 20,
                                              sequence_number=7), 32, 0),
    ("data descriptor", DATA_DESCRIPTOR, dict(trailing_bytes=b"\x01\x02\x03\x04", leading_bytes=bytes(range(8)),
                                              file_offset=3 << 20, sequence_number=7), 32, 0),
    ("data sector", DATA_SECTOR, dict(sequence_high=1, data=bytes(range(256)) * 15 + bytes(range(244)),
                                      sequence_low=0xFFFFFFFF), 4096, 0),
]


@pytest.mark.parametrize(("con", "value", "size"), [c[1:4] for c in CASES], ids=[c[0] for c in CASES])
def test_roundtrip(con: construct.Construct, value: dict[str, Any], size: int) -> None:
    assert_roundtrip(con, value, size)


@pytest.mark.parametrize(("con", "value", "sig_at"), [(c[1], c[2], c[4]) for c in CASES if c[4] is not None],
                         ids=[c[0] for c in CASES if c[4] is not None])
def test_wrong_signature_is_rejected(con: construct.Construct, value: dict[str, Any], sig_at: int) -> None:
    built = bytearray(con.build(value))
    built[sig_at] ^= 0x20
    with pytest.raises(construct.ConstError):
        con.parse(bytes(built))


@pytest.mark.parametrize(("con", "value"), [c[1:3] for c in CASES], ids=[c[0] for c in CASES])
def test_short_input_is_rejected(con: construct.Construct, value: dict[str, Any]) -> None:
    built = con.build(value)
    with pytest.raises(construct.StreamError):
        con.parse(built[:-1])


def test_file_identifier_creator_is_utf16_and_padded() -> None:
    built = FILE_IDENTIFIER.build(dict(creator="Microsoft Windows 6.3.9600.18512"))
    assert built[:8] == constants.FILE_IDENTIFIER_SIGNATURE
    assert built[8 : 8 + 18] == "Microsoft".encode("utf-16-le")
    assert built[8 + constants.CREATOR_SIZE :] == bytes(len(built) - 8 - constants.CREATOR_SIZE)


def test_guid_fields_store_mixed_endian() -> None:
    built = REGION_TABLE_ENTRY.build(dict(guid=constants.BAT_REGION_GUID, file_offset=0, length=0, flags=0))
    assert built[:16] == bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")


def test_counts_are_rebuilt_from_the_lists() -> None:
    built = REGION_TABLE.build(dict(checksum=0, reserved=0, entries=[
        dict(guid=G1, file_offset=1 << 20, length=1 << 20, flags=0)] * 3))
    assert int.from_bytes(built[8:12], "little") == 3
    built = METADATA_TABLE.build(dict(reserved=0, reserved2=bytes(20), entries=[
        dict(item_id=G1, offset=0, length=0, flags=0, reserved2=0)] * 4))
    assert int.from_bytes(built[10:12], "little") == 4


# Field offsets and sizes from the spec's layout tables (VHDX-FORMAT.md 5.1, 6.1, 7.1, 7.2, 7.5, 10.1).
OFFSETS = [
    (HEADER_FIELDS, {"signature": 0, "checksum": 4, "sequence_number": 8, "file_write_guid": 16, "data_write_guid": 32,
                     "log_guid": 48, "log_version": 64, "version": 66, "log_length": 68, "log_offset": 72}, 80),
    (FILE_IDENTIFIER_FIELDS, {"signature": 0, "creator": 8}, 520),
    (REGION_TABLE_HEADER, {"signature": 0, "checksum": 4, "entry_count": 8, "reserved": 12}, 16),
    (REGION_TABLE_ENTRY, {"guid": 0, "file_offset": 16, "length": 24, "flags": 28}, 32),
    (METADATA_TABLE_HEADER, {"signature": 0, "reserved": 8, "entry_count": 10, "reserved2": 12}, 32),
    (METADATA_TABLE_ENTRY, {"item_id": 0, "offset": 16, "length": 20, "flags": 24, "reserved2": 28}, 32),
    (PARENT_LOCATOR_HEADER, {"locator_type": 0, "reserved": 16, "key_value_count": 18}, 20),
    (PARENT_LOCATOR_ENTRY, {"key_offset": 0, "value_offset": 4, "key_length": 8, "value_length": 10}, 12),
    (LOG_ENTRY_HEADER, {"signature": 0, "checksum": 4, "entry_length": 8, "tail": 12, "sequence_number": 16,
                        "descriptor_count": 24, "reserved": 28, "log_guid": 32, "flushed_file_offset": 48,
                        "last_file_offset": 56}, 64),
    (ZERO_DESCRIPTOR, {"signature": 0, "reserved": 4, "zero_length": 8, "file_offset": 16, "sequence_number": 24}, 32),
    (DATA_DESCRIPTOR, {"signature": 0, "trailing_bytes": 4, "leading_bytes": 8, "file_offset": 16,
                       "sequence_number": 24}, 32),
    (DATA_SECTOR, {"signature": 0, "sequence_high": 4, "data": 8, "sequence_low": 4092}, 4096),
]


@pytest.mark.parametrize(("con", "offsets", "size"), OFFSETS, ids=[
    "header", "file identifier", "region header", "region entry", "metadata header", "metadata entry",
    "locator header", "locator entry", "log entry header", "zero descriptor", "data descriptor", "data sector"])
def test_field_offsets_match_the_spec(con: construct.Struct, offsets: dict[str, int], size: int) -> None:
    for name, offset in offsets.items():
        assert field_offset(con, name) == offset, name
    assert sizeof(con) == size


def test_exported_offsets_and_sizes() -> None:
    assert HEADER_CHECKSUM_OFFSET == REGION_TABLE_CHECKSUM_OFFSET == LOG_ENTRY_CHECKSUM_OFFSET == 4
    assert REGION_TABLE_HEADER_SIZE == 16 and REGION_TABLE_ENTRY_SIZE == 32
    assert METADATA_TABLE_HEADER_SIZE == 32 and METADATA_TABLE_ENTRY_SIZE == 32
    assert PARENT_LOCATOR_HEADER_SIZE == 20 and PARENT_LOCATOR_ENTRY_SIZE == 12
    assert LOG_ENTRY_HEADER_SIZE == 64 and DESCRIPTOR_SIZE == 32
    # 126 descriptors fit after the header in the first descriptor sector, 128 in later ones (10.1).
    assert (constants.LOG_SECTOR_SIZE - LOG_ENTRY_HEADER_SIZE) // DESCRIPTOR_SIZE == 126


def test_field_offset_unknown_name() -> None:
    with pytest.raises(KeyError):
        field_offset(HEADER_FIELDS, "nope")
