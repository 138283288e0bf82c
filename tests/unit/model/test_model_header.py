"""Header model: decode/encode, choosing the current header (VHDX-FORMAT.md 5.2), validating it,
and building the next one (5.3)."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from unit import spec_vectors as sv
from vhdx import checksum
from vhdx.constants import HEADER_1_OFFSET, HEADER_2_OFFSET, HEADER_SIZE, MiB
from vhdx.errors import ChecksumError, CorruptStructureError, SignatureError, TruncatedError, UnsupportedError
from vhdx.model._decode import parse_struct
from vhdx.model.header import Header, build_header, next_header, parse_header, select_current, validate_header
from vhdx.structs.header import HEADER, HEADER_CHECKSUM_OFFSET

LOG_GUID = uuid.UUID("5e1f0000-0000-4000-8000-00000000abcd")


def header(seq: int = 1, **changes: object) -> Header:
    base = Header(**sv.HEADER_FIELDS)  # type: ignore[arg-type]
    return dataclasses.replace(base, sequence_number=seq, **changes)  # type: ignore[arg-type]


def raw(h: Header) -> bytes:
    return build_header(h)


def bad_checksum(h: Header) -> bytes:
    buf = bytearray(build_header(h))
    buf[100] ^= 1  # inside the checksummed reserved area
    return bytes(buf)


def bad_signature(h: Header) -> bytes:
    buf = bytearray(build_header(h))
    buf[0:4] = b"HEAD"
    checksum.seal(buf, HEADER_CHECKSUM_OFFSET)
    return bytes(buf)


def test_build_header_matches_the_known_answer() -> None:
    assert build_header(header()) == sv.HEADER_BYTES


def test_parse_header_roundtrip() -> None:
    h = header(seq=0x1234_5678_9ABC, log_guid=LOG_GUID, log_offset=4 * MiB, log_length=2 * MiB)
    parsed = parse_header(build_header(h), HEADER_1_OFFSET)
    assert dataclasses.replace(parsed, checksum=0) == h
    assert parsed.checksum == checksum.stored(build_header(h), HEADER_CHECKSUM_OFFSET)


def test_build_header_ignores_a_stale_checksum_field() -> None:
    assert build_header(header(checksum=0xFFFFFFFF)) == build_header(header())


@pytest.mark.parametrize(("data", "error"), [
    (bad_checksum(header()), ChecksumError),
    (bad_signature(header()), SignatureError),
    (build_header(header())[:100], TruncatedError),
    (b"", TruncatedError),
], ids=["checksum", "signature", "short", "empty"])
def test_parse_header_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        parse_header(data, HEADER_2_OFFSET)
    assert type(info.value) is error
    assert info.value.structure == "header 2" and info.value.offset == HEADER_2_OFFSET


def test_the_checksum_covers_exactly_4_kib() -> None:
    # Bytes after the 4 KiB structure (rest of the 64 KiB slot) are not covered.
    slot = build_header(header()) + b"\xff" * 100
    assert parse_header(slot, HEADER_1_OFFSET).sequence_number == 1
    assert len(build_header(header())) == HEADER_SIZE


# (raw header 1, raw header 2, expected current index or error, number of problems reported)
SELECT_CASES = [
    ("h1 newer", raw(header(5)), raw(header(4)), 0, 0),
    ("h2 newer", raw(header(4)), raw(header(5)), 1, 0),
    ("h2 newer by far", raw(header(1)), raw(header(1 << 63)), 1, 0),
    ("only h1 valid (checksum)", raw(header(4)), bad_checksum(header(9)), 0, 1),
    ("only h2 valid (checksum)", bad_checksum(header(9)), raw(header(4)), 1, 1),
    ("only h1 valid (signature)", raw(header(4)), bad_signature(header(9)), 0, 1),
    ("only h2 valid (missing)", b"", raw(header(4)), 1, 1),
    ("only h2 valid (zeros)", bytes(HEADER_SIZE), raw(header(4)), 1, 1),
    ("equal and identical", raw(header(7)), raw(header(7)), 0, 0),
    ("equal but different", raw(header(7)), raw(header(7, data_write_guid=LOG_GUID)), CorruptStructureError, 0),
    ("both bad checksum", bad_checksum(header(1)), bad_checksum(header(2)), ChecksumError, 0),
    ("both bad signature", bad_signature(header(1)), bad_signature(header(2)), SignatureError, 0),
    ("both zero", bytes(HEADER_SIZE), bytes(HEADER_SIZE), SignatureError, 0),
]


@pytest.mark.parametrize(("raw1", "raw2", "expected", "problems"), [c[1:] for c in SELECT_CASES],
                         ids=[c[0] for c in SELECT_CASES])
def test_select_current(raw1: bytes, raw2: bytes, expected: int | type[Exception], problems: int) -> None:
    if isinstance(expected, int):
        choice = select_current(raw1, raw2)
        assert choice.current_index == expected
        assert choice.current == choice.headers[expected]
        assert len(choice.problems) == problems
        other = choice.headers[1 - expected]
        assert (other is None) == bool(problems)
        if problems:
            assert choice.problems[0].structure == f"header {2 - expected}"
    else:
        with pytest.raises(expected) as info:
            select_current(raw1, raw2)
        assert type(info.value) is expected


def test_only_the_current_header_is_validated() -> None:
    # The stale header has a bad version, but the newer one is fine: it is never looked at.
    choice = select_current(raw(header(2, version=7)), raw(header(3)))
    assert choice.current_index == 1


# (changes to the current header, expected error or None)
VALIDATE_CASES = [
    ("valid", {}, None),
    ("version 0", {"version": 0}, UnsupportedError),
    ("version 2", {"version": 2}, UnsupportedError),
    ("log version 1 with empty log", {"log_version": 1}, None),
    ("log version 1 with log guid", {"log_version": 1, "log_guid": LOG_GUID}, UnsupportedError),
    ("log version 0 with log guid", {"log_guid": LOG_GUID}, None),
    ("log offset misaligned", {"log_offset": MiB + 4096}, CorruptStructureError),
    ("log length misaligned", {"log_length": MiB + 4096}, CorruptStructureError),
    ("log inside the header section", {"log_offset": 0}, CorruptStructureError),
    ("no log and no log guid", {"log_offset": 0, "log_length": 0}, None),
    ("log guid but no log", {"log_offset": 0, "log_length": 0, "log_guid": LOG_GUID}, CorruptStructureError),
    ("big log far away", {"log_offset": 1 << 40, "log_length": 64 * MiB}, None),
]


@pytest.mark.parametrize(("changes", "error"), [c[1:] for c in VALIDATE_CASES], ids=[c[0] for c in VALIDATE_CASES])
def test_current_header_rules(changes: dict[str, object], error: type[Exception] | None) -> None:
    current = header(9, **changes)
    stale = header(8)
    if error is None:
        assert select_current(raw(stale), raw(current)).current == dataclasses.replace(
            current, checksum=checksum.stored(raw(current), HEADER_CHECKSUM_OFFSET))
        validate_header(current, HEADER_2_OFFSET)
    else:
        with pytest.raises(error) as info:
            select_current(raw(stale), raw(current))
        assert type(info.value) is error
        assert info.value.structure == "header 2"


def test_next_header_copies_every_field_and_increments() -> None:
    h = header(41, log_guid=LOG_GUID, log_offset=8 * MiB, log_length=4 * MiB, checksum=123)
    new_guid = uuid.UUID(int=99)
    n = next_header(h, file_write_guid=new_guid)
    assert n.sequence_number == 42
    assert n.file_write_guid == new_guid
    assert dataclasses.replace(n, sequence_number=41, file_write_guid=h.file_write_guid, checksum=123) == h
    assert n.checksum == 0
    # Written into the other slot, it becomes current.
    assert select_current(raw(h), raw(n)).current_index == 1
    assert select_current(raw(n), raw(h)).current_index == 0


def test_parse_struct_maps_construct_errors() -> None:
    with pytest.raises(SignatureError):
        parse_struct(HEADER, bytes(HEADER_SIZE), structure="x", offset=0)
    with pytest.raises(TruncatedError):
        parse_struct(HEADER, sv.HEADER_BYTES[:10], structure="x", offset=0)
