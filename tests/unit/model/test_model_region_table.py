"""Region table model: decode/encode and the reader rules of VHDX-FORMAT.md 6.3."""

from __future__ import annotations

import uuid

import pytest

from unit import spec_vectors as sv
from vhdx import checksum
from vhdx.constants import BAT_REGION_GUID, MAX_REGION_ENTRIES, METADATA_REGION_GUID, MiB, REGION_TABLE_2_OFFSET
from vhdx.errors import ChecksumError, CorruptStructureError, SignatureError, TruncatedError, UnsupportedError
from vhdx.model.region_table import RegionTable, RegionTableEntry, build_region_table, parse_region_table
from vhdx.structs.region_table import REGION_TABLE_CHECKSUM_OFFSET

UNKNOWN = uuid.UUID("3c3f6e8a-1b2d-4e5f-8a9b-0c1d2e3f4a5b")
OFFSET = REGION_TABLE_2_OFFSET


def bat(offset: int = 2 * MiB, length: int = MiB, required: bool = True) -> RegionTableEntry:
    return RegionTableEntry(BAT_REGION_GUID, offset, length, required)


def meta(offset: int = 3 * MiB, length: int = MiB, required: bool = True) -> RegionTableEntry:
    return RegionTableEntry(METADATA_REGION_GUID, offset, length, required)


def other(offset: int = 8 * MiB, length: int = MiB, required: bool = False) -> RegionTableEntry:
    return RegionTableEntry(UNKNOWN, offset, length, required)


def parse(*entries: RegionTableEntry) -> RegionTable:
    return parse_region_table(build_region_table(RegionTable(tuple(entries))), OFFSET)


@pytest.mark.parametrize(("layout", "expected"), [(sv.REGION_TABLE_WINDOWS, sv.REGION_TABLE_CHECKSUM),
                                                  (sv.REGION_TABLE_QEMU, sv.REGION_TABLE_QEMU_CHECKSUM)],
                         ids=["windows", "qemu"])
def test_build_matches_the_known_answers(layout: tuple[int, int, bool], expected: int) -> None:
    bat_offset, meta_offset, required = layout
    built = build_region_table(RegionTable((bat(bat_offset, required=required), meta(meta_offset, required=required))))
    assert checksum.stored(built, REGION_TABLE_CHECKSUM_OFFSET) == expected
    if layout == sv.REGION_TABLE_WINDOWS:
        assert built == sv.REGION_TABLE_BYTES


def test_parse_the_known_answer() -> None:
    table = parse_region_table(sv.REGION_TABLE_BYTES, OFFSET)
    assert table.bat.file_offset == 3 * MiB and table.bat.length == MiB and table.bat.required
    assert table.metadata.file_offset == 2 * MiB and table.metadata.required


def test_roundtrip_keeps_unknown_optional_regions_and_flags() -> None:
    entries = (bat(required=False), meta(required=False), other())
    table = parse(*entries)
    assert [(e.guid, e.file_offset, e.length, e.required) for e in table.entries] == [
        (e.guid, e.file_offset, e.length, e.required) for e in entries]
    assert table.find(UNKNOWN).name == f"region {UNKNOWN}"
    assert build_region_table(table) == build_region_table(RegionTable(entries))
    with pytest.raises(KeyError):
        table.find(uuid.UUID(int=1))


def test_reserved_flag_bits_survive_a_rewrite() -> None:
    table = parse(bat(), meta(), RegionTableEntry(UNKNOWN, 8 * MiB, MiB, False, flags=0x80000000))
    assert table.find(UNKNOWN).flags == 0x80000000 and not table.find(UNKNOWN).required
    assert parse_region_table(build_region_table(table), OFFSET).find(UNKNOWN).flags == 0x80000000


# (entries, expected error)
RULES = [
    ("duplicate BAT", (bat(), meta(), bat(offset=5 * MiB)), CorruptStructureError),
    ("duplicate unknown", (bat(), meta(), other(), other(offset=9 * MiB)), CorruptStructureError),
    ("unknown required", (bat(), meta(), other(required=True)), UnsupportedError),
    ("missing BAT", (meta(),), CorruptStructureError),
    ("missing metadata", (bat(),), CorruptStructureError),
    ("empty table", (), CorruptStructureError),
    ("BAT and metadata overlap", (bat(length=2 * MiB), meta()), CorruptStructureError),
    ("same offset", (bat(offset=3 * MiB), meta()), CorruptStructureError),
    ("unknown overlaps BAT", (bat(), meta(), other(offset=2 * MiB)), CorruptStructureError),
    ("BAT offset misaligned", (bat(offset=2 * MiB + 4096), meta()), CorruptStructureError),
    ("metadata length misaligned", (bat(), meta(length=MiB + 512)), CorruptStructureError),
    ("unknown misaligned", (bat(), meta(), other(length=4096)), CorruptStructureError),
    ("BAT in the header section", (bat(offset=0), meta()), CorruptStructureError),
    ("metadata empty", (bat(), meta(length=0)), CorruptStructureError),
]


@pytest.mark.parametrize(("entries", "error"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_reader_rules(entries: tuple[RegionTableEntry, ...], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        parse(*entries)
    assert type(info.value) is error
    assert info.value.structure == "region table 2" and info.value.offset == OFFSET


# Accepted variants (each shows one of the rules above is not over-eager).
ACCEPTED = [
    ("required = 0 on known regions (QEMU)", (bat(required=False), meta(required=False))),
    ("adjacent regions", (bat(offset=2 * MiB), meta(offset=3 * MiB))),
    ("metadata before BAT", (meta(offset=2 * MiB), bat(offset=3 * MiB))),
    ("unknown optional region", (bat(), meta(), other())),
    ("unknown optional empty region", (bat(), meta(), other(length=0))),
    ("big regions far away", (bat(offset=1 << 40, length=513 * MiB), meta(offset=MiB))),
]


@pytest.mark.parametrize("entries", [a[1] for a in ACCEPTED], ids=[a[0] for a in ACCEPTED])
def test_accepted(entries: tuple[RegionTableEntry, ...]) -> None:
    table = parse(*entries)
    assert len(table.entries) == len(entries)


def test_entry_count_limit() -> None:
    buf = bytearray(build_region_table(RegionTable((bat(), meta()))))
    buf[8:12] = (MAX_REGION_ENTRIES + 1).to_bytes(4, "little")
    checksum.seal(buf, REGION_TABLE_CHECKSUM_OFFSET)
    with pytest.raises(CorruptStructureError):
        parse_region_table(bytes(buf), OFFSET)
    buf[8:12] = (0xFFFFFFFF).to_bytes(4, "little")
    checksum.seal(buf, REGION_TABLE_CHECKSUM_OFFSET)
    with pytest.raises(CorruptStructureError):
        parse_region_table(bytes(buf), OFFSET)


def test_the_checksum_covers_the_whole_64_kib() -> None:
    buf = bytearray(build_region_table(RegionTable((bat(), meta()))))
    buf[-1] ^= 0x01  # the last byte of the padding after the entries
    with pytest.raises(ChecksumError):
        parse_region_table(bytes(buf), OFFSET)


def test_bad_signature() -> None:
    buf = bytearray(build_region_table(RegionTable((bat(), meta()))))
    buf[0:4] = b"REGI"
    checksum.seal(buf, REGION_TABLE_CHECKSUM_OFFSET)
    with pytest.raises(SignatureError):
        parse_region_table(bytes(buf), OFFSET)


def test_short_table_is_truncated() -> None:
    raw = build_region_table(RegionTable((bat(), meta())))
    with pytest.raises(TruncatedError):
        parse_region_table(raw[:4096], OFFSET)


def test_very_short_table_is_truncated() -> None:
    with pytest.raises(TruncatedError):
        parse_region_table(b"regi", OFFSET)
