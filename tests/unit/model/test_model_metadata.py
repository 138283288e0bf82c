"""Metadata model: every reader rule of VHDX-FORMAT.md 7 (table, items, known values), and the
builders used by writers and by tests/craft.py."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from unit import spec_vectors as sv
from vhdx.constants import (
    FILE_PARAMETERS_GUID,
    FILE_PARAMETERS_HAS_PARENT,
    FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED,
    LOGICAL_SECTOR_SIZE_GUID,
    MAX_METADATA_ENTRIES,
    MAX_USER_METADATA_ENTRIES,
    METADATA_FLAG_IS_REQUIRED,
    METADATA_FLAG_IS_USER,
    METADATA_FLAG_IS_VIRTUAL_DISK,
    METADATA_ITEM_MAX_LENGTH,
    METADATA_ITEM_MIN_OFFSET,
    METADATA_TABLE_SIZE,
    PARENT_LOCATOR_GUID,
    PHYSICAL_SECTOR_SIZE_GUID,
    VIRTUAL_DISK_ID_GUID,
    VIRTUAL_DISK_SIZE_GUID,
    GiB,
    MiB,
    TiB,
)
from vhdx.errors import CorruptStructureError, SignatureError, TruncatedError, UnsupportedError
from vhdx.model.metadata import (
    Metadata,
    MetadataItem,
    build_metadata_region,
    decode_metadata,
    known_entries,
    parse_metadata_table,
    system_items,
)
from vhdx.model.parent_locator import build_parent_locator
from vhdx.structs.metadata import METADATA_TABLE

REGION_OFFSET = 3 * MiB
REGION_LENGTH = MiB
USER = uuid.UUID("d1d2d3d4-0000-4000-8000-0000000000aa")
SYSTEM_UNKNOWN = uuid.UUID("e1e2e3e4-0000-4000-8000-0000000000bb")
PARENT_GUID = uuid.UUID("83ed0ec3-24c8-49a6-a959-5e4bf1288bfb")

BASE = Metadata(
    block_size=sv.METADATA_BLOCK_SIZE,
    file_parameter_flags=0,
    virtual_disk_size=sv.METADATA_VIRTUAL_SIZE,
    virtual_disk_id=sv.METADATA_DISK_ID,
    logical_sector_size=sv.METADATA_LOGICAL,
    physical_sector_size=sv.METADATA_PHYSICAL,
    parent_locator=None,
)
LOCATOR = build_parent_locator([("parent_linkage", "{" + str(PARENT_GUID) + "}"), ("relative_path", ".\\p.vhdx")])


def load(region: bytes, region_length: int = REGION_LENGTH) -> Metadata:
    """Decode a metadata region the way the image loader does."""
    entries = parse_metadata_table(region[:METADATA_TABLE_SIZE], REGION_OFFSET, region_length)
    values = {g: region[e.offset : e.offset + e.length] for g, e in known_entries(entries).items()}
    return decode_metadata(entries, values, REGION_OFFSET)


def region_of(meta: Metadata = BASE, locator: bytes | None = None, extra: list[MetadataItem] = ()) -> bytes:
    return build_metadata_region(system_items(meta, locator) + list(extra), REGION_LENGTH)


def raw_table(entries: list[tuple[uuid.UUID, int, int, int]]) -> bytes:
    """A metadata table with arbitrary (item id, offset, length, flags) entries."""
    return METADATA_TABLE.build(dict(reserved=0, reserved2=bytes(20), entries=[
        dict(item_id=g, offset=o, length=n, flags=f, reserved2=0) for g, o, n, f in entries]))


# A valid set of entries laid out like QEMU (7.4); tests change one of them.
VD = METADATA_FLAG_IS_VIRTUAL_DISK | METADATA_FLAG_IS_REQUIRED
QEMU_ENTRIES = [
    (FILE_PARAMETERS_GUID, 0x10000, 8, METADATA_FLAG_IS_REQUIRED),
    (VIRTUAL_DISK_SIZE_GUID, 0x10008, 8, VD),
    (VIRTUAL_DISK_ID_GUID, 0x10010, 16, VD),
    (LOGICAL_SECTOR_SIZE_GUID, 0x10020, 4, VD),
    (PHYSICAL_SECTOR_SIZE_GUID, 0x10024, 4, VD),
]


def parse_table(entries: list[tuple[uuid.UUID, int, int, int]], region_length: int = REGION_LENGTH):  # type: ignore[no-untyped-def]
    return parse_metadata_table(raw_table(entries), REGION_OFFSET, region_length)


def test_build_matches_the_known_answer() -> None:
    region = region_of()
    assert region[: len(sv.METADATA_REGION_PREFIX)] == sv.METADATA_REGION_PREFIX
    assert not any(region[len(sv.METADATA_REGION_PREFIX) :])


def test_decode_the_known_answer() -> None:
    region = bytearray(REGION_LENGTH)
    region[: len(sv.METADATA_REGION_PREFIX)] = sv.METADATA_REGION_PREFIX
    meta = load(bytes(region))
    assert dataclasses.replace(meta, entries=()) == BASE
    assert [e.flags for e in meta.entries] == [4, 6, 6, 6, 6]
    assert meta.geometry().chunk_ratio == 128


@pytest.mark.parametrize(("flags", "kind"), [
    (0, (False, False)), (FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED, (True, False)),
    (FILE_PARAMETERS_HAS_PARENT, (False, True)), (FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED | FILE_PARAMETERS_HAS_PARENT,
                                                  (True, True))])
def test_file_parameter_flags(flags: int, kind: tuple[bool, bool]) -> None:
    locator = LOCATOR if flags & FILE_PARAMETERS_HAS_PARENT else None
    meta = load(region_of(dataclasses.replace(BASE, file_parameter_flags=flags), locator))
    assert (meta.leave_block_allocated, meta.has_parent) == kind
    assert (meta.parent_locator is not None) == kind[1]
    if kind[1]:
        assert meta.parent_locator.linkages == (PARENT_GUID,)  # type: ignore[union-attr]


def test_reserved_file_parameter_bits_are_kept() -> None:
    assert load(region_of(dataclasses.replace(BASE, file_parameter_flags=0x80))).file_parameter_flags == 0x80


def test_unknown_optional_items_are_kept() -> None:
    extra = [MetadataItem(SYSTEM_UNKNOWN, b"abc", 0), MetadataItem(USER, b"user data", METADATA_FLAG_IS_USER),
             # Known GUID as a *user* item: not the system item, so not required to have its length.
             MetadataItem(FILE_PARAMETERS_GUID, b"xyz", METADATA_FLAG_IS_USER)]
    meta = load(region_of(extra=extra))
    assert dataclasses.replace(meta, entries=()) == BASE
    ids = [(e.item_id, e.is_user) for e in meta.entries]
    assert (SYSTEM_UNKNOWN, False) in ids and (USER, True) in ids and (FILE_PARAMETERS_GUID, True) in ids
    assert set(known_entries(meta.entries)) == {g for g, *_ in QEMU_ENTRIES}


def test_user_item_with_known_guid_marked_required_is_unknown() -> None:
    entries = QEMU_ENTRIES + [(FILE_PARAMETERS_GUID, 0x10100, 8, METADATA_FLAG_IS_USER | METADATA_FLAG_IS_REQUIRED)]
    with pytest.raises(UnsupportedError):
        parse_table(entries)


def test_empty_item_with_zero_offset_is_present() -> None:
    entries = parse_table(QEMU_ENTRIES + [(SYSTEM_UNKNOWN, 0, 0, 0)])
    assert entries[-1].length == 0


def replace_entry(index: int, **changes: int) -> list[tuple[uuid.UUID, int, int, int]]:
    out = list(QEMU_ENTRIES)
    g, o, n, f = out[index]
    out[index] = (g, changes.get("offset", o), changes.get("length", n), changes.get("flags", f))
    return out


# (entries, region length, expected error) -- one rule each (VHDX-FORMAT.md 7.1-7.4).
TABLE_RULES = [
    ("duplicate system item", QEMU_ENTRIES + [(FILE_PARAMETERS_GUID, 0x10100, 8, 4)], CorruptStructureError),
    ("duplicate user item", QEMU_ENTRIES + [(USER, 0x10100, 8, 1), (USER, 0x10200, 8, 1)], CorruptStructureError),
    ("item over 1 MiB", QEMU_ENTRIES + [(USER, 0x10100, METADATA_ITEM_MAX_LENGTH + 1, 1)], CorruptStructureError),
    ("empty item with an offset", QEMU_ENTRIES + [(USER, 0x10100, 0, 1)], CorruptStructureError),
    ("item inside the table", replace_entry(0, offset=METADATA_ITEM_MIN_OFFSET - 8), CorruptStructureError),
    ("item at offset 0 with data", replace_entry(0, offset=0), CorruptStructureError),
    ("item past the region end", QEMU_ENTRIES + [(USER, REGION_LENGTH - 4, 8, 1)], CorruptStructureError),
    ("item far past the region", replace_entry(2, offset=0xFFFFFFF0), CorruptStructureError),
    ("overlapping items", replace_entry(1, offset=0x10004), CorruptStructureError),
    ("user item overlapping a system item", QEMU_ENTRIES + [(USER, 0x10020, 4, 1)], CorruptStructureError),
    ("file parameters 4 bytes", replace_entry(0, length=4), CorruptStructureError),
    ("virtual disk size 4 bytes", replace_entry(1, length=4), CorruptStructureError),
    ("virtual disk id 8 bytes", replace_entry(2, length=8), CorruptStructureError),
    ("logical sector size 8 bytes", replace_entry(3, length=8), CorruptStructureError),
    ("physical sector size 8 bytes", replace_entry(4, length=8), CorruptStructureError),
    ("missing file parameters", QEMU_ENTRIES[1:], CorruptStructureError),
    ("missing virtual disk size", [e for i, e in enumerate(QEMU_ENTRIES) if i != 1], CorruptStructureError),
    ("missing virtual disk id", [e for i, e in enumerate(QEMU_ENTRIES) if i != 2], CorruptStructureError),
    ("missing logical sector size", [e for i, e in enumerate(QEMU_ENTRIES) if i != 3], CorruptStructureError),
    ("missing physical sector size", QEMU_ENTRIES[:4], CorruptStructureError),
    ("system item only as user item", replace_entry(0, flags=METADATA_FLAG_IS_USER), CorruptStructureError),
    ("unknown required system item", QEMU_ENTRIES + [(SYSTEM_UNKNOWN, 0x10100, 8, 4)], UnsupportedError),
    ("unknown required user item", QEMU_ENTRIES + [(USER, 0x10100, 8, 5)], UnsupportedError),
    ("unknown required empty item", QEMU_ENTRIES + [(SYSTEM_UNKNOWN, 0, 0, 4)], UnsupportedError),
]


@pytest.mark.parametrize("entries,error", [r[1:] for r in TABLE_RULES], ids=[r[0] for r in TABLE_RULES])
def test_table_rules(entries: list[tuple[uuid.UUID, int, int, int]], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        parse_table(entries)
    assert type(info.value) is error


def test_items_may_fill_a_small_region_exactly() -> None:
    last = QEMU_ENTRIES[-1]
    parse_table(QEMU_ENTRIES, region_length=last[1] + last[2])
    with pytest.raises(CorruptStructureError):
        parse_table(QEMU_ENTRIES, region_length=last[1] + last[2] - 1)


def test_user_item_limit() -> None:
    users = [(uuid.UUID(int=i + 1), 0, 0, METADATA_FLAG_IS_USER) for i in range(MAX_USER_METADATA_ENTRIES)]
    parse_table(QEMU_ENTRIES + users)
    with pytest.raises(CorruptStructureError):
        parse_table(QEMU_ENTRIES + users + [(uuid.UUID(int=0xFFFF), 0, 0, METADATA_FLAG_IS_USER)])


@pytest.mark.parametrize("count", [MAX_METADATA_ENTRIES + 1, 0xFFFF])
def test_entry_count_limit(count: int) -> None:
    table = bytearray(raw_table(QEMU_ENTRIES))
    table[10:12] = count.to_bytes(2, "little")
    with pytest.raises(CorruptStructureError):
        parse_metadata_table(bytes(table), REGION_OFFSET, REGION_LENGTH)


def test_table_signature_and_truncation() -> None:
    table = bytearray(raw_table(QEMU_ENTRIES))
    table[0] ^= 0x20
    with pytest.raises(SignatureError):
        parse_metadata_table(bytes(table), REGION_OFFSET, REGION_LENGTH)
    with pytest.raises(TruncatedError):
        parse_metadata_table(raw_table(QEMU_ENTRIES)[:100], REGION_OFFSET, REGION_LENGTH)


# (changes to the decoded values, expected error) -- 7.4 and the geometry limits of section 3.
VALUE_RULES = [
    ("block size not a power of two", {"block_size": 3 * MiB}, CorruptStructureError),
    ("block size 512 KiB", {"block_size": MiB // 2}, CorruptStructureError),
    ("block size 512 MiB", {"block_size": 512 * MiB}, CorruptStructureError),
    ("block size 0", {"block_size": 0}, CorruptStructureError),
    ("virtual size over 64 TiB", {"virtual_disk_size": 64 * TiB + MiB}, CorruptStructureError),
    ("virtual size not a sector multiple", {"virtual_disk_size": GiB + 1}, CorruptStructureError),
    ("virtual size a 512 multiple with 4096 sectors", {"virtual_disk_size": GiB + 512, "logical_sector_size": 4096},
     CorruptStructureError),
    ("logical sector 1024", {"logical_sector_size": 1024}, CorruptStructureError),
    ("logical sector 0", {"logical_sector_size": 0}, CorruptStructureError),
    ("physical sector 1024", {"physical_sector_size": 1024}, CorruptStructureError),
    ("has parent without a locator", {"file_parameter_flags": FILE_PARAMETERS_HAS_PARENT}, CorruptStructureError),
]


@pytest.mark.parametrize("changes,error", [r[1:] for r in VALUE_RULES], ids=[r[0] for r in VALUE_RULES])
def test_value_rules(changes: dict[str, int], error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        load(region_of(dataclasses.replace(BASE, **changes)))  # type: ignore[arg-type]
    assert type(info.value) is error


@pytest.mark.parametrize("changes", [
    {"block_size": MiB}, {"block_size": 256 * MiB}, {"virtual_disk_size": 64 * TiB}, {"virtual_disk_size": 0},
    {"virtual_disk_size": 512}, {"logical_sector_size": 4096, "physical_sector_size": 512},
], ids=["1 MiB blocks", "256 MiB blocks", "64 TiB", "empty disk", "one sector", "4K logical"])
def test_value_limits_accepted(changes: dict[str, int]) -> None:
    meta = load(region_of(dataclasses.replace(BASE, **changes)))  # type: ignore[arg-type]
    for key, value in changes.items():
        assert getattr(meta, key) == value


def test_locator_without_has_parent_is_ignored() -> None:
    meta = load(region_of(BASE, LOCATOR))
    assert meta.parent_locator is None
    assert PARENT_LOCATOR_GUID in known_entries(meta.entries)


def test_broken_locator_is_reported() -> None:
    broken = build_parent_locator([("relative_path", ".\\p.vhdx")])  # no parent_linkage
    with pytest.raises(CorruptStructureError):
        load(region_of(dataclasses.replace(BASE, file_parameter_flags=FILE_PARAMETERS_HAS_PARENT), broken))


def test_build_metadata_region_refuses_items_that_do_not_fit() -> None:
    with pytest.raises(ValueError):
        build_metadata_region([MetadataItem(USER, bytes(REGION_LENGTH), METADATA_FLAG_IS_USER)], REGION_LENGTH)


def test_system_items_flags() -> None:
    items = system_items(BASE, LOCATOR)
    flags = {i.item_id: i.flags for i in items}
    # VHDX-FORMAT.md 7.4: File Parameters and Parent Locator 0x4, the others 0x6.
    assert flags[FILE_PARAMETERS_GUID] == flags[PARENT_LOCATOR_GUID] == 0x4
    assert {flags[g] for g in (VIRTUAL_DISK_SIZE_GUID, VIRTUAL_DISK_ID_GUID, LOGICAL_SECTOR_SIZE_GUID,
                               PHYSICAL_SECTOR_SIZE_GUID)} == {0x6}
