"""Layer 1 against the reference document: CRC-32C vectors (section 2), GUID byte order and known
GUIDs (section 0), signatures, and the full-structure vectors of section 16, built with the
construct declarations plus ``checksum.seal`` only (no model code).
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from unit import spec_vectors as sv
from vhdx import checksum, constants
from vhdx.structs import bat as bat_struct
from vhdx.structs.header import HEADER, HEADER_CHECKSUM_OFFSET
from vhdx.structs.log import (
    DATA_DESCRIPTOR,
    DATA_SECTOR,
    DESCRIPTOR_SIZE,
    LOG_ENTRY_CHECKSUM_OFFSET,
    LOG_ENTRY_HEADER,
    LOG_ENTRY_HEADER_SIZE,
)
from vhdx.structs.metadata import (
    FILE_PARAMETERS,
    LOGICAL_SECTOR_SIZE,
    METADATA_TABLE,
    PHYSICAL_SECTOR_SIZE,
    VIRTUAL_DISK_ID,
    VIRTUAL_DISK_SIZE,
)
from vhdx.structs.region_table import REGION_TABLE, REGION_TABLE_CHECKSUM_OFFSET


@pytest.mark.parametrize(("data", "expected"), sv.CRC32C_VECTORS, ids=["123456789", "zeros32", "ff32", "empty"])
def test_crc32c_vectors(data: bytes, expected: int) -> None:
    assert checksum.crc32c(data) == expected


def test_crc32c_continues_across_pieces() -> None:
    data, expected = sv.CRC32C_VECTORS[0]
    assert checksum.crc32c(data[4:], checksum.crc32c(data[:4])) == expected


def test_seal_verify_compute_agree_and_ignore_the_stored_field() -> None:
    buf = bytearray(b"\xaa" * 64)
    value = checksum.seal(buf, 8)
    assert checksum.stored(buf, 8) == value
    assert checksum.verify(buf, 8)
    # compute() treats the field as zero whatever it holds, so it equals the sealed value.
    assert checksum.compute(buf, 8) == value
    # The CRC is over the buffer with the field zeroed: the same as crc32c of that buffer.
    zeroed = bytes(buf[:8]) + bytes(4) + bytes(buf[12:])
    assert checksum.crc32c(zeroed) == value
    buf[30] ^= 1
    assert not checksum.verify(buf, 8)


def test_verify_does_not_modify_the_buffer() -> None:
    buf = bytearray(sv.HEADER_BYTES)
    snapshot = bytes(buf)
    assert checksum.verify(buf, HEADER_CHECKSUM_OFFSET)
    assert bytes(buf) == snapshot


def test_guid_mixed_endian_example() -> None:
    guid, raw = sv.GUID_EXAMPLE
    assert guid.bytes_le == raw


@pytest.mark.parametrize("name", sorted(sv.KNOWN_GUIDS))
def test_known_guid_constants_match_the_spec_bytes(name: str) -> None:
    text, hexbytes = sv.KNOWN_GUIDS[name]
    value = getattr(constants, name)
    assert value == uuid.UUID(text)
    assert value.bytes_le == bytes.fromhex(hexbytes)


@pytest.mark.parametrize("name", sorted(sv.SIGNATURES))
def test_signatures_are_the_spec_bytes(name: str) -> None:
    raw, le_value = sv.SIGNATURES[name]
    assert getattr(constants, name) == raw
    assert int.from_bytes(raw, "little") == le_value


def test_header_vector() -> None:
    buf = bytearray(HEADER.build(dict(checksum=0, **sv.HEADER_FIELDS)))
    assert checksum.seal(buf, HEADER_CHECKSUM_OFFSET) == sv.HEADER_CHECKSUM
    assert bytes(buf) == sv.HEADER_BYTES
    assert checksum.verify(sv.HEADER_BYTES, HEADER_CHECKSUM_OFFSET)
    parsed = HEADER.parse(sv.HEADER_BYTES)
    assert parsed.checksum == sv.HEADER_CHECKSUM
    for key, value in sv.HEADER_FIELDS.items():
        assert parsed[key] == value, key


def _region_table(bat_offset: int, metadata_offset: int, required: bool) -> bytearray:
    flags = constants.REGION_REQUIRED_FLAG if required else 0
    entries = [
        dict(guid=constants.BAT_REGION_GUID, file_offset=bat_offset, length=sv.MiB, flags=flags),
        dict(guid=constants.METADATA_REGION_GUID, file_offset=metadata_offset, length=sv.MiB, flags=flags),
    ]
    return bytearray(REGION_TABLE.build(dict(checksum=0, reserved=0, entries=entries)))


def test_region_table_vector() -> None:
    buf = _region_table(*sv.REGION_TABLE_WINDOWS)
    assert checksum.seal(buf, REGION_TABLE_CHECKSUM_OFFSET) == sv.REGION_TABLE_CHECKSUM
    assert bytes(buf) == sv.REGION_TABLE_BYTES
    parsed = REGION_TABLE.parse(sv.REGION_TABLE_BYTES)
    assert parsed.entry_count == 2
    assert [(e.guid, e.file_offset, e.length, e.flags) for e in parsed.entries] == [
        (constants.BAT_REGION_GUID, 3 * sv.MiB, sv.MiB, 1),
        (constants.METADATA_REGION_GUID, 2 * sv.MiB, sv.MiB, 1),
    ]


def test_region_table_vector_qemu_layout() -> None:
    buf = _region_table(*sv.REGION_TABLE_QEMU)
    assert checksum.seal(buf, REGION_TABLE_CHECKSUM_OFFSET) == sv.REGION_TABLE_QEMU_CHECKSUM


def test_metadata_table_vector() -> None:
    # Offsets, lengths and flags exactly as section 16 lists them (QEMU's placement, 7.4).
    items = [
        (constants.FILE_PARAMETERS_GUID, 0x10000, 8, 4,
         FILE_PARAMETERS.build(dict(block_size=sv.METADATA_BLOCK_SIZE, flags=0))),
        (constants.VIRTUAL_DISK_SIZE_GUID, 0x10008, 8, 6,
         VIRTUAL_DISK_SIZE.build(dict(virtual_disk_size=sv.METADATA_VIRTUAL_SIZE))),
        (constants.VIRTUAL_DISK_ID_GUID, 0x10010, 16, 6, VIRTUAL_DISK_ID.build(dict(virtual_disk_id=sv.METADATA_DISK_ID))),
        (constants.LOGICAL_SECTOR_SIZE_GUID, 0x10020, 4, 6,
         LOGICAL_SECTOR_SIZE.build(dict(logical_sector_size=sv.METADATA_LOGICAL))),
        (constants.PHYSICAL_SECTOR_SIZE_GUID, 0x10024, 4, 6,
         PHYSICAL_SECTOR_SIZE.build(dict(physical_sector_size=sv.METADATA_PHYSICAL))),
    ]
    table = METADATA_TABLE.build(dict(reserved=0, reserved2=bytes(20), entries=[
        dict(item_id=g, offset=o, length=n, flags=f, reserved2=0) for g, o, n, f, _ in items]))
    region = bytearray(len(sv.METADATA_REGION_PREFIX))
    region[: len(table)] = table
    for _, offset, length, _, value in items:
        assert len(value) == length
        region[offset : offset + length] = value
    assert bytes(region) == sv.METADATA_REGION_PREFIX


def test_log_entry_vector() -> None:
    sector = sv.LOG_SECTOR_FIRST_U64.to_bytes(8, "little") + bytes(constants.LOG_SECTOR_SIZE - 8)
    buf = bytearray(len(sv.LOG_ENTRY_BYTES))
    buf[:LOG_ENTRY_HEADER_SIZE] = LOG_ENTRY_HEADER.build(dict(
        checksum=0, entry_length=len(buf), tail=0, sequence_number=sv.LOG_SEQUENCE, descriptor_count=1, reserved=0,
        log_guid=sv.LOG_GUID, flushed_file_offset=sv.LOG_FLUSHED, last_file_offset=sv.LOG_LAST))
    buf[LOG_ENTRY_HEADER_SIZE : LOG_ENTRY_HEADER_SIZE + DESCRIPTOR_SIZE] = DATA_DESCRIPTOR.build(dict(
        trailing_bytes=sector[-constants.LOG_DATA_TRAILING_SIZE:], leading_bytes=sector[: constants.LOG_DATA_LEADING_SIZE],
        file_offset=sv.LOG_TARGET, sequence_number=sv.LOG_SEQUENCE))
    data_at = constants.LOG_SECTOR_SIZE
    buf[data_at : data_at + constants.LOG_SECTOR_SIZE] = DATA_SECTOR.build(dict(
        sequence_high=sv.LOG_SEQUENCE >> 32,
        data=sector[constants.LOG_DATA_LEADING_SIZE : -constants.LOG_DATA_TRAILING_SIZE],
        sequence_low=sv.LOG_SEQUENCE & 0xFFFFFFFF))
    assert checksum.seal(buf, LOG_ENTRY_CHECKSUM_OFFSET) == sv.LOG_CHECKSUM
    assert bytes(buf) == sv.LOG_ENTRY_BYTES


def test_bat_entry_example() -> None:
    state, offset, value, raw = sv.BAT_EXAMPLE
    assert bat_struct.make_entry(state, offset) == value
    entries = bat_struct.parse(raw)
    assert entries.tolist() == [value]
    assert bat_struct.build(entries) == raw
    assert bat_struct.states(entries).tolist() == [state]
    assert bat_struct.file_offsets(entries).tolist() == [offset]


def test_bat_bulk_roundtrip_and_field_split() -> None:
    rng = np.random.default_rng(7)
    mb = rng.integers(0, 1 << 40, size=257, dtype=np.uint64)  # FileOffsetMB is 44 bits wide
    states = rng.integers(0, 8, size=257, dtype=np.uint64)
    entries = (mb << np.uint64(20)) | states
    raw = bat_struct.build(entries)
    assert len(raw) == 8 * len(entries)
    back = bat_struct.parse(raw)
    assert back.dtype == np.uint64
    assert np.array_equal(back, entries)
    assert np.array_equal(bat_struct.states(back), states.astype(np.uint8))
    assert np.array_equal(bat_struct.file_offsets(back), mb << np.uint64(20))
    # Reserved bits 3-19 never leak into the state or the offset.
    noisy = entries | np.uint64(0xFFFF8)
    assert np.array_equal(bat_struct.states(noisy), states.astype(np.uint8))
    assert np.array_equal(bat_struct.file_offsets(noisy), mb << np.uint64(20))
