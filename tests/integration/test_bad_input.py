"""Hostile and damaged input: every kind of bad image ends in a *specific* ``VhdxError`` subclass,
with bounded memory, and the file is never modified.

Images start valid -- made at test time with qemu-img/qemu-io (``craft.qemu_image``), or the
Windows-made ``dissect.hypervisor/fixed.vhdx`` from the shared fixtures -- and copies are damaged
with ``tests/craft.py``. Damage to checksummed structures that should reach a deeper layer is
written with the library's own builders (valid CRCs), so each case tests the rule it names rather
than the checksum. Each family has a positive control (the same crafting with no damage opens and
reads correctly), so a failure to raise cannot come from broken crafting.

Memory: every open runs under ``tracemalloc`` and must stay below ``MEMORY_BOUND``. Time is not
asserted (tests never assert on time); hostile counts that would loop or allocate per entry show
up here as memory or as a run that blows the suite's time budget.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import craft
import vhdx
from craft import Layout, read_layout, unchanged
from helpers import copy_to, image_of, load_expected, sha256_of_disk
from vhdx.constants import (
    BAT_REGION_GUID,
    FILE_PARAMETERS_HAS_PARENT,
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    HEADER_SIZE,
    LOG_SECTOR_SIZE,
    METADATA_FLAG_IS_REQUIRED,
    METADATA_REGION_GUID,
    METADATA_TABLE_SIZE,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    REGION_TABLE_SIZE,
    KiB,
    MiB,
    PayloadBlockState,
    SectorBitmapState,
    TiB,
)
from vhdx.errors import (
    ChecksumError,
    CorruptStructureError,
    LogReplayError,
    ParentChainError,
    ParentMismatchError,
    ParentNotFoundError,
    SignatureError,
    TruncatedError,
    UnsupportedError,
    VhdxError,
)
from vhdx.model.log import DataWrite, ZeroWrite, build_entry
from vhdx.model.metadata import MetadataItem
from vhdx.model.parent_locator import build_parent_locator
from vhdx.model.region_table import RegionTableEntry

MEMORY_BOUND = 48 * MiB
UNKNOWN_GUID = uuid.UUID("3c3f6e8a-1b2d-4e5f-8a9b-0c1d2e3f4a5b")
LOG_GUID = uuid.UUID("10a10a10-0000-4000-8000-00000000beef")

# The base dynamic image: 64 MiB, 1 MiB blocks; blocks 0, 1, 5 and 63 written, in that order, so
# they sit at the first four MiB of payload space. Everything else is NOT_PRESENT.
PATTERNS = {0: 0x11, 1: 0x11, 5: 0x22, 63: 0x33}
WRITES = [(0, 2 * MiB, 0x11), (5 * MiB, MiB, 0x22), (63 * MiB, MiB, 0x33)]


# --- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-input-bases")
    return {
        "dyn": craft.qemu_image(folder, "dyn.vhdx", writes=WRITES),
        "parent": craft.qemu_image(folder, "parent.vhdx", writes=[(0, 8 * MiB, 0x44)]),
        "child": craft.qemu_image(folder, "child.vhdx", writes=[(MiB, MiB, 0x55)]),
    }


@pytest.fixture
def dyn(bases: dict[str, Path], tmp_path: Path) -> Path:
    return copy_to(bases["dyn"], tmp_path, "disk.vhdx")


@pytest.fixture(scope="session")
def windows_fixed() -> Path:
    """A small Windows-made image (metadata at 2 MiB, BAT at 3 MiB, five 2 MiB blocks)."""
    (entry,) = [e for e in load_expected() if e.id == "dissect.hypervisor/fixed.vhdx"]
    return image_of(entry)


def base_of(kind: str, request: pytest.FixtureRequest) -> Path:
    """The valid image a truncation case starts from (fixtures resolved lazily, so a missing tool
    or fixture set only skips the cases that need it)."""
    if kind == "qemu":
        return request.getfixturevalue("bases")["dyn"]  # type: ignore[no-any-return]
    return request.getfixturevalue("windows_fixed")  # type: ignore[no-any-return]


def measured_open(path: Path, **kwargs: object) -> tuple[vhdx.VirtualDisk | None, BaseException | None, int]:
    """Open ``path`` under tracemalloc; return (disk or None, error or None, peak bytes)."""
    tracemalloc.start()
    try:
        try:
            disk, error = vhdx.open(path, **kwargs), None  # type: ignore[arg-type]
        except BaseException as err:  # noqa: BLE001 - the caller checks the type
            disk, error = None, err
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return disk, error, peak


def expect_error(path: Path, error: type[VhdxError], *others: Path, **kwargs: object) -> VhdxError:
    """Opening ``path`` raises exactly ``error`` within the memory bound, touching no file."""
    with unchanged(path, *others):
        disk, err, peak = measured_open(path, **kwargs)
        if disk is not None:
            disk.close()
    assert err is not None, f"{path.name} opened, expected {error.__name__}"
    assert type(err) is error, f"expected {error.__name__}, got {type(err).__name__}: {err}"
    assert peak < MEMORY_BOUND, f"peak memory {peak} bytes"
    assert str(err)  # a message, naming the structure
    return err  # type: ignore[return-value]


def expect_open(path: Path, *others: Path, **kwargs: object) -> vhdx.VirtualDisk:
    with unchanged(path, *others):
        disk, err, peak = measured_open(path, **kwargs)
    assert err is None, f"{type(err).__name__}: {err}"
    assert peak < MEMORY_BOUND
    assert disk is not None
    return disk


def assert_base_content(disk: vhdx.VirtualDisk) -> None:
    """The dyn base reads back as written (a 1-byte probe per MiB, plus whole written blocks)."""
    assert disk.size == 64 * MiB
    for block in range(64):
        assert disk.pread(block * MiB + 4321, 1) == bytes([PATTERNS.get(block, 0)]), f"block {block}"
    assert disk.pread(5 * MiB, MiB) == bytes([0x22]) * MiB


# --- positive controls --------------------------------------------------------------------------------


def test_base_image_and_noop_rewrites_open(dyn: Path) -> None:
    # Rewriting every structure with the builders, without changing a value, keeps a valid image:
    # the damage in the tests below is therefore what makes them fail.
    layout = read_layout(dyn)
    with expect_open(dyn) as disk:
        assert_base_content(disk)
        digest = sha256_of_disk(disk)
        assert disk.info().problems == ()
    craft.rewrite_headers(dyn)
    craft.rewrite_region_tables(dyn, layout.region_table.entries)
    craft.rewrite_metadata(dyn, craft.metadata_items(layout), layout)
    craft.patch_region_table_bytes(dyn, lambda b: None)
    with expect_open(dyn) as disk:
        assert sha256_of_disk(disk) == digest
        assert disk.info().problems == ()


# --- truncation at every structure boundary ----------------------------------------------------------

# name -> (size computed from the layout, expected error)
TRUNCATIONS: dict[str, tuple[Callable[[Layout], int], type[VhdxError]]] = {
    "empty file": (lambda L: 0, SignatureError),
    "inside the signature": (lambda L: 4, SignatureError),
    "signature only": (lambda L: 8, TruncatedError),
    "file identifier only": (lambda L: HEADER_1_OFFSET, TruncatedError),
    "inside header 1": (lambda L: HEADER_1_OFFSET + HEADER_SIZE // 2, TruncatedError),
    "header 1 only": (lambda L: HEADER_2_OFFSET, TruncatedError),
    "both headers": (lambda L: REGION_TABLE_1_OFFSET, TruncatedError),
    "inside region table 1": (lambda L: REGION_TABLE_1_OFFSET + 100, TruncatedError),
    "region table 1 only": (lambda L: REGION_TABLE_2_OFFSET, TruncatedError),
    "both region tables": (lambda L: REGION_TABLE_2_OFFSET + REGION_TABLE_SIZE, TruncatedError),
    "one byte short of 1 MiB": (lambda L: MiB - 1, TruncatedError),
    "header section only": (lambda L: MiB, TruncatedError),
    "inside the log": (lambda L: L.log_offset + L.log_length // 2, TruncatedError),
    "end of the log": (lambda L: L.log_offset + L.log_length, TruncatedError),
    "inside the BAT": (lambda L: L.bat_offset + LOG_SECTOR_SIZE, TruncatedError),
    "start of the metadata": (lambda L: L.metadata_offset, TruncatedError),
    "inside the metadata table": (lambda L: L.metadata_offset + 100, TruncatedError),
    "inside the metadata items": (lambda L: L.metadata_offset + METADATA_TABLE_SIZE + 12, TruncatedError),
    "end of the regions": (lambda L: max(L.bat_offset + L.bat_length, L.metadata_offset + L.metadata_length),
                           TruncatedError),
    "start of the first payload block": (lambda L: L.present_blocks()[0][1], TruncatedError),
    "inside the first payload block": (lambda L: L.present_blocks()[0][1] + 4 * KiB, TruncatedError),
    "start of the last payload block": (lambda L: L.present_blocks()[-1][1], TruncatedError),
}


@pytest.mark.parametrize("kind", ["qemu", "windows"])
@pytest.mark.parametrize("point", list(TRUNCATIONS))
def test_truncation(point: str, kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    source = base_of(kind, request)
    layout = read_layout(source)
    size_of, error = TRUNCATIONS[point]
    size = size_of(layout)
    assert 0 <= size < layout.file_size
    damaged = craft.truncated_copy(source, tmp_path / "truncated.vhdx", size)
    assert damaged.stat().st_size == size
    expect_error(damaged, error)


@pytest.mark.parametrize("kind", ["qemu", "windows"])
def test_truncation_inside_the_last_block_reads_zeros_and_warns(kind: str, request: pytest.FixtureRequest,
                                                               tmp_path: Path) -> None:
    # VHDX-FORMAT.md 8.7: a block cut short at EOF (QEMU's own fixed images end like that) is
    # tolerated: the missing tail reads as zeros and the problem is reported.
    source = base_of(kind, request)
    layout = read_layout(source)
    block, offset = layout.present_blocks()[-1]
    keep = 3 * 4 * KiB + 512
    with vhdx.open(source) as whole:
        start = block * layout.geometry.block_size
        expected = whole.pread(start, keep) + bytes(layout.geometry.block_virtual_length(block) - keep)
    damaged = craft.truncated_copy(source, tmp_path / "cut.vhdx", offset + keep)
    with expect_open(damaged) as disk:
        assert disk.pread(start, len(expected)) == expected
        assert any("past the end of the file" in p for p in disk.info().problems)


def test_random_bytes_are_not_a_vhdx(tmp_path: Path) -> None:
    path = tmp_path / "noise.vhdx"
    path.write_bytes(bytes(range(256)) * 8192)
    expect_error(path, SignatureError)


# --- flipped bytes in checksummed structures -----------------------------------------------------------

HEADER_BYTES = [0, 4, 8, 48, 100, HEADER_SIZE - 1]  # signature, checksum, sequence, LogGuid, reserved, last


@pytest.mark.parametrize("slot", [1, 2])
@pytest.mark.parametrize("at", HEADER_BYTES)
def test_one_bad_header_falls_back_to_the_other(dyn: Path, slot: int, at: int) -> None:
    craft.flip_byte(dyn, (HEADER_1_OFFSET, HEADER_2_OFFSET)[slot - 1] + at)
    with expect_open(dyn) as disk:
        info = disk.info()
        assert info.current_header == 3 - slot
        assert any(f"header {slot}" in p for p in info.problems), info.problems
        assert_base_content(disk)


def test_bytes_after_the_4_kib_header_are_not_checked(dyn: Path) -> None:
    craft.flip_byte(dyn, HEADER_1_OFFSET + HEADER_SIZE + 10)
    craft.flip_byte(dyn, HEADER_2_OFFSET + 2 * HEADER_SIZE)
    with expect_open(dyn) as disk:
        assert disk.info().problems == ()


@pytest.mark.parametrize(("at", "error"), [(100, ChecksumError), (8, ChecksumError), (0, SignatureError)])
def test_both_headers_bad(dyn: Path, at: int, error: type[VhdxError]) -> None:
    craft.flip_byte(dyn, HEADER_1_OFFSET + at)
    craft.flip_byte(dyn, HEADER_2_OFFSET + at)
    expect_error(dyn, error)


def test_equal_sequence_numbers_with_different_headers(dyn: Path) -> None:
    current = read_layout(dyn).header
    craft.write_header(dyn, 1, current)
    craft.write_header(dyn, 2, dataclasses.replace(current, data_write_guid=uuid.uuid4()))
    expect_error(dyn, CorruptStructureError)


def test_equal_sequence_numbers_with_identical_headers_open(dyn: Path) -> None:
    # Sysinternals Disk2VHD writes such files (VHDX-FORMAT.md 5.2 step 3).
    current = read_layout(dyn).header
    craft.write_header(dyn, 1, current)
    craft.write_header(dyn, 2, current)
    with expect_open(dyn) as disk:
        assert_base_content(disk)


@pytest.mark.parametrize(("changes", "error"), [
    ({"version": 2}, UnsupportedError),
    ({"version": 0}, UnsupportedError),
    ({"log_version": 1, "log_guid": LOG_GUID}, UnsupportedError),
    ({"log_offset": MiB + 512}, CorruptStructureError),
    ({"log_offset": 0}, CorruptStructureError),
    ({"log_length": MiB // 2}, CorruptStructureError),
    ({"log_offset": 64 * TiB}, TruncatedError),
], ids=["version 2", "version 0", "log version 1", "log misaligned", "log in header section", "log length",
        "log past EOF"])
def test_current_header_values(dyn: Path, changes: dict[str, object], error: type[VhdxError]) -> None:
    craft.rewrite_headers(dyn, **changes)
    expect_error(dyn, error)


@pytest.mark.parametrize("slot", [1, 2])
@pytest.mark.parametrize("at", [0, 4, 8, 20, REGION_TABLE_SIZE - 1])
def test_one_bad_region_table(dyn: Path, slot: int, at: int) -> None:
    craft.flip_byte(dyn, (REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET)[slot - 1] + at)
    with expect_open(dyn) as disk:
        info = disk.info()
        assert info.region_table == 3 - slot
        assert any(f"region table {slot}" in p for p in info.problems), info.problems
        assert_base_content(disk)


@pytest.mark.parametrize(("at", "error"), [(20, ChecksumError), (0, SignatureError)])
def test_both_region_tables_bad(dyn: Path, at: int, error: type[VhdxError]) -> None:
    craft.flip_byte(dyn, REGION_TABLE_1_OFFSET + at)
    craft.flip_byte(dyn, REGION_TABLE_2_OFFSET + at)
    expect_error(dyn, error)


# --- the log --------------------------------------------------------------------------------------------


def zero_block_5_entry(layout: Layout, *, seq: int = 1, **overrides: object) -> bytes:
    """A log entry that rewrites the first BAT sector so block 5 becomes ZERO (a visible change)."""
    sector = bytearray(craft.read_bytes(layout.path, layout.bat_offset, LOG_SECTOR_SIZE))
    index = layout.geometry.payload_bat_index(5)
    sector[index * 8 : index * 8 + 8] = int(PayloadBlockState.ZERO).to_bytes(8, "little")
    fields = dict(log_guid=LOG_GUID, sequence_number=seq, tail=0, flushed_file_offset=layout.file_size,
                  last_file_offset=layout.file_size, writes=[DataWrite(layout.bat_offset, bytes(sector))])
    fields.update(overrides)
    return build_entry(**fields)  # type: ignore[arg-type]


def test_valid_log_entry_is_replayed_in_memory(dyn: Path) -> None:
    craft.write_log_entries(dyn, [(0, zero_block_5_entry(read_layout(dyn)))], LOG_GUID)
    with expect_open(dyn) as disk:
        assert disk.has_pending_log
        assert disk.pread(5 * MiB, MiB) == bytes(MiB)
        assert disk.pread(0, 1) == b"\x11"


@pytest.mark.parametrize("at", [20, 40, 70, LOG_SECTOR_SIZE + 100, 2 * LOG_SECTOR_SIZE - 1],
                         ids=["header", "log guid", "descriptor", "data sector", "last byte"])
def test_flipped_log_entry_is_not_replayed(dyn: Path, at: int) -> None:
    layout = read_layout(dyn)
    entry = bytearray(zero_block_5_entry(layout))
    entry[at] ^= 0x40
    craft.write_log_entries(dyn, [(0, bytes(entry))], LOG_GUID)
    with expect_open(dyn) as disk:
        assert not disk.has_pending_log
        assert any("log" in p for p in disk.info().problems)
        assert_base_content(disk)


def test_log_entry_length_huge_is_ignored(dyn: Path) -> None:
    layout = read_layout(dyn)
    entry = bytearray(zero_block_5_entry(layout))
    entry[8:12] = (0xFFFFF000).to_bytes(4, "little")  # EntryLength: 4 GiB - 4 KiB
    craft.write_log_entries(dyn, [(0, bytes(entry))], LOG_GUID)
    with expect_open(dyn) as disk:
        assert not disk.has_pending_log
        assert_base_content(disk)


def test_log_descriptor_count_huge_is_ignored(dyn: Path) -> None:
    layout = read_layout(dyn)
    entry = bytearray(zero_block_5_entry(layout))
    entry[24:28] = (0xFFFFFFFF).to_bytes(4, "little")
    craft.write_log_entries(dyn, [(0, bytes(entry))], LOG_GUID)
    with expect_open(dyn) as disk:
        assert not disk.has_pending_log


@pytest.mark.parametrize(("writes", "last", "error"), [
    ([ZeroWrite(4 * MiB, 0xFFFFFFFFFFFFF000)], None, LogReplayError),
    ([ZeroWrite(4 * MiB, 4 * MiB)], 1 << 63, LogReplayError),
    ([DataWrite(HEADER_1_OFFSET, bytes(LOG_SECTOR_SIZE))], None, CorruptStructureError),
    ([DataWrite(MiB + 8 * LOG_SECTOR_SIZE, bytes(LOG_SECTOR_SIZE))], None, CorruptStructureError),
], ids=["zero length huge", "last file offset huge", "writes header 1", "writes into the log"])
def test_hostile_log_entries(dyn: Path, writes: list[DataWrite | ZeroWrite], last: int | None,
                             error: type[VhdxError]) -> None:
    layout = read_layout(dyn)
    assert layout.log_offset == MiB
    entry = zero_block_5_entry(layout, writes=writes, **({"last_file_offset": last} if last else {}))
    craft.write_log_entries(dyn, [(0, entry)], LOG_GUID)
    expect_error(dyn, error)


def test_log_says_the_file_was_longer(dyn: Path) -> None:
    layout = read_layout(dyn)
    entry = zero_block_5_entry(layout, flushed_file_offset=layout.file_size + MiB)
    craft.write_log_entries(dyn, [(0, entry)], LOG_GUID)
    expect_error(dyn, TruncatedError)


# --- region table contents (valid checksums) ---------------------------------------------------------------


def regions(layout: Layout, **moves: tuple[int, int]) -> list[RegionTableEntry]:
    out = []
    for e in layout.region_table.entries:
        name = {BAT_REGION_GUID: "bat", METADATA_REGION_GUID: "metadata"}[e.guid]
        offset, length = moves.get(name, (e.file_offset, e.length))
        out.append(RegionTableEntry(e.guid, offset, length, e.required, e.flags))
    return out


REGION_DAMAGE: dict[str, tuple[Callable[[Layout], list[RegionTableEntry]], type[VhdxError]]] = {
    "BAT overlaps metadata": (lambda L: regions(L, bat=(L.bat_offset, 2 * MiB)), CorruptStructureError),
    "metadata on the BAT": (lambda L: regions(L, metadata=(L.bat_offset, MiB)), CorruptStructureError),
    "BAT over the log": (lambda L: regions(L, bat=(L.log_offset, MiB)), CorruptStructureError),
    "BAT in the header section": (lambda L: regions(L, bat=(0, MiB)), CorruptStructureError),
    "BAT misaligned": (lambda L: regions(L, bat=(L.bat_offset + 4 * KiB, MiB)), CorruptStructureError),
    "BAT past EOF": (lambda L: regions(L, bat=(64 * TiB, MiB)), TruncatedError),
    "BAT region empty": (lambda L: regions(L, bat=(L.bat_offset, 0)), CorruptStructureError),
    "metadata missing": (lambda L: [e for e in regions(L) if e.guid == BAT_REGION_GUID], CorruptStructureError),
    "BAT twice": (lambda L: regions(L) + [RegionTableEntry(BAT_REGION_GUID, 5 * MiB, MiB, True)],
                  CorruptStructureError),
    "unknown required region": (lambda L: regions(L) + [RegionTableEntry(UNKNOWN_GUID, 5 * MiB, MiB, True)],
                                UnsupportedError),
}


@pytest.mark.parametrize("name", list(REGION_DAMAGE))
def test_region_table_contents(dyn: Path, name: str) -> None:
    make, error = REGION_DAMAGE[name]
    craft.rewrite_region_tables(dyn, make(read_layout(dyn)))
    expect_error(dyn, error)


def test_unknown_optional_region_is_ignored(dyn: Path) -> None:
    layout = read_layout(dyn)
    craft.rewrite_region_tables(dyn, regions(layout) + [RegionTableEntry(UNKNOWN_GUID, 5 * MiB, MiB, False)])
    with expect_open(dyn) as disk:
        assert_base_content(disk)


@pytest.mark.parametrize("count", [2048, 0xFFFFFFFF])
def test_region_entry_count_huge(dyn: Path, count: int) -> None:
    craft.patch_region_table_bytes(dyn, lambda b: b.__setitem__(slice(8, 12), count.to_bytes(4, "little")))
    expect_error(dyn, CorruptStructureError)


# --- BAT entries ---------------------------------------------------------------------------------------------

BAT_DAMAGE: dict[str, tuple[Callable[[Layout], tuple[int, int, int]], type[VhdxError]]] = {
    # name -> (layout -> (entry offset, state, file offset)), error
    "block past EOF": (lambda L: (L.payload_entry_offset(7), PayloadBlockState.FULLY_PRESENT, 64 * MiB), TruncatedError),
    "block far past EOF": (lambda L: (L.payload_entry_offset(7), PayloadBlockState.FULLY_PRESENT, 1 << 60),
                           TruncatedError),
    "block over the metadata": (lambda L: (L.payload_entry_offset(7), PayloadBlockState.FULLY_PRESENT,
                                           L.metadata_offset), CorruptStructureError),
    "block over the BAT": (lambda L: (L.payload_entry_offset(7), PayloadBlockState.FULLY_PRESENT, L.bat_offset),
                           CorruptStructureError),
    "block over the log": (lambda L: (L.payload_entry_offset(7), PayloadBlockState.FULLY_PRESENT, L.log_offset),
                           CorruptStructureError),
    "block in the header section": (lambda L: (L.payload_entry_offset(7), PayloadBlockState.FULLY_PRESENT, 0),
                                    CorruptStructureError),
    "two blocks in one place": (lambda L: (L.payload_entry_offset(7), PayloadBlockState.FULLY_PRESENT,
                                           L.block_file_offset(5)), CorruptStructureError),
    "reserved state 4": (lambda L: (L.payload_entry_offset(7), 4, 0), CorruptStructureError),
    "reserved state 4 on a present block": (lambda L: (L.payload_entry_offset(5), 4, L.block_file_offset(5)),
                                            CorruptStructureError),
    "partially present in a dynamic disk": (lambda L: (L.payload_entry_offset(5), PayloadBlockState.PARTIALLY_PRESENT,
                                                       L.block_file_offset(5)), CorruptStructureError),
    "reserved sector bitmap state": (lambda L: (L.bitmap_entry_offset(0), 3, 0), CorruptStructureError),
}


@pytest.mark.parametrize("name", list(BAT_DAMAGE))
def test_bat_entries(dyn: Path, name: str) -> None:
    make, error = BAT_DAMAGE[name]
    craft.set_bat_entry(dyn, *make(read_layout(dyn)))
    expect_error(dyn, error)


@pytest.mark.parametrize("state", [PayloadBlockState.UNDEFINED, PayloadBlockState.ZERO, PayloadBlockState.UNMAPPED,
                                   PayloadBlockState.UNMAPPED_V095])
def test_states_without_data_read_zeros(dyn: Path, state: int) -> None:
    layout = read_layout(dyn)
    craft.set_bat_entry(dyn, layout.payload_entry_offset(5), state, 0)
    with expect_open(dyn) as disk:
        assert disk.pread(5 * MiB, MiB) == bytes(MiB)
        assert disk.pread(0, 1) == b"\x11"


def test_sector_bitmap_present_in_a_dynamic_disk_is_tolerated(dyn: Path) -> None:
    layout = read_layout(dyn)
    craft.set_bat_entry(dyn, layout.bitmap_entry_offset(0), SectorBitmapState.PRESENT, 4 * MiB)
    with expect_open(dyn) as disk:
        assert any("sector bitmap" in p for p in disk.info().problems)
        assert_base_content(disk)


# --- metadata --------------------------------------------------------------------------------------------------

METADATA_VALUES: dict[str, tuple[dict[str, object], type[VhdxError]]] = {
    "block size not a power of two": ({"block_size": 3 * MiB}, CorruptStructureError),
    "block size below 1 MiB": ({"block_size": 512 * KiB}, CorruptStructureError),
    "block size above 256 MiB": ({"block_size": 512 * MiB}, CorruptStructureError),
    "virtual size over 64 TiB": ({"virtual_disk_size": 64 * TiB + MiB}, CorruptStructureError),
    "virtual size not a sector multiple": ({"virtual_disk_size": 64 * MiB + 1}, CorruptStructureError),
    "virtual size needs a bigger BAT": ({"virtual_disk_size": 64 * TiB}, CorruptStructureError),
    "logical sector size 1024": ({"logical_sector_size": 1024}, CorruptStructureError),
    "physical sector size 1024": ({"physical_sector_size": 1024}, CorruptStructureError),
    "has parent without a locator": ({"file_parameter_flags": FILE_PARAMETERS_HAS_PARENT}, CorruptStructureError),
}


@pytest.mark.parametrize("name", list(METADATA_VALUES))
def test_metadata_values(dyn: Path, name: str) -> None:
    changes, error = METADATA_VALUES[name]
    layout = read_layout(dyn)
    craft.rewrite_metadata(dyn, craft.metadata_items(layout, **changes), layout)
    expect_error(dyn, error)


def test_unknown_required_metadata_item(dyn: Path) -> None:
    layout = read_layout(dyn)
    items = craft.metadata_items(layout) + [MetadataItem(UNKNOWN_GUID, b"x" * 16, METADATA_FLAG_IS_REQUIRED)]
    craft.rewrite_metadata(dyn, items, layout)
    expect_error(dyn, UnsupportedError)


def test_unknown_optional_metadata_item_is_ignored(dyn: Path) -> None:
    layout = read_layout(dyn)
    craft.rewrite_metadata(dyn, craft.metadata_items(layout) + [MetadataItem(UNKNOWN_GUID, b"x" * 16, 0)], layout)
    with expect_open(dyn) as disk:
        assert_base_content(disk)


@pytest.mark.parametrize(("at", "value", "error"), [
    (10, (0xFFFF).to_bytes(2, "little"), CorruptStructureError),  # EntryCount
    (0, b"METADATA", SignatureError),
    (32 + 16, (0xFFFF0000).to_bytes(4, "little"), CorruptStructureError),  # first item's Offset, outside the region
    (32 + 20, (8 * MiB).to_bytes(4, "little"), CorruptStructureError),  # first item's Length, over 1 MiB
], ids=["entry count huge", "signature", "item outside the region", "item too long"])
def test_metadata_table_bytes(dyn: Path, at: int, value: bytes, error: type[VhdxError]) -> None:
    layout = read_layout(dyn)
    craft.patch(dyn, layout.metadata_offset + at, value)
    expect_error(dyn, error)


# --- differencing chains ---------------------------------------------------------------------------------------


@pytest.fixture
def family(bases: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """(child, parent) copies in one folder; the child is not yet a differencing disk."""
    return copy_to(bases["child"], tmp_path, "child.vhdx"), copy_to(bases["parent"], tmp_path, "parent.vhdx")


def test_differencing_control(family: tuple[Path, Path]) -> None:
    child, parent = family
    craft.make_differencing(child, parent)
    with expect_open(child, parent) as disk:
        assert disk.disk_type == "differencing"
        assert disk.parent is not None
        assert disk.pread(0, 1) == b"\x44"  # from the parent
        assert disk.pread(MiB, MiB) == b"\x55" * MiB  # the child's own block
        assert disk.pread(2 * MiB + 7, 1) == b"\x44"
        assert disk.pread(9 * MiB, 1) == b"\x00"


def test_missing_parent(family: tuple[Path, Path]) -> None:
    child, parent = family
    craft.make_differencing(child, parent)
    parent.unlink()
    expect_error(child, ParentNotFoundError)
    # Still inspectable without it; reads that need the parent say so.
    with expect_open(child, require_parent=False) as disk:
        assert disk.pread(MiB, 4) == b"\x55" * 4
        with pytest.raises(ParentNotFoundError):
            disk.pread(0, 4)


def test_parent_cycle_between_two_children(family: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = family
    # Make both children differencing, each naming the other as its parent; b first, so that a's
    # linkage can name b's DataWriteGuid (the chain check must stop the loop before any linkage).
    craft.make_differencing(b, a)
    craft.make_differencing(a, b)
    expect_error(a, ParentChainError, b)


def test_parent_is_itself(family: tuple[Path, Path]) -> None:
    child, _ = family
    craft.make_differencing(child, child)
    expect_error(child, ParentChainError)


def test_wrong_parent(family: tuple[Path, Path]) -> None:
    child, parent = family
    craft.make_differencing(child, parent, linkage="{" + str(uuid.uuid4()) + "}")
    expect_error(child, ParentMismatchError, parent)
    with expect_open(child, parent, ignore_id_mismatch=True) as disk:
        assert disk.pread(0, 1) == b"\x44"


def test_parent_modified_after_the_child_was_made(family: tuple[Path, Path]) -> None:
    child, parent = family
    craft.make_differencing(child, parent)
    craft.rewrite_headers(parent, data_write_guid=uuid.uuid4())
    expect_error(child, ParentMismatchError, parent)


def test_parent_with_other_sector_size(family: tuple[Path, Path]) -> None:
    child, parent = family
    craft.make_differencing(child, parent)
    layout = read_layout(parent)
    craft.rewrite_metadata(parent, craft.metadata_items(layout, logical_sector_size=4096), layout)
    expect_error(child, ParentMismatchError, parent)
    expect_error(child, ParentMismatchError, parent, ignore_id_mismatch=True)


@pytest.mark.parametrize(("entries", "error"), [
    ([("relative_path", ".\\parent.vhdx")], CorruptStructureError),
    ([("parent_linkage", "not-a-guid"), ("relative_path", ".\\parent.vhdx")], CorruptStructureError),
    ([("parent_linkage", "{00000000-0000-0000-0000-000000000001}")], CorruptStructureError),
], ids=["no parent_linkage", "linkage not a guid", "no path"])
def test_broken_parent_locator(family: tuple[Path, Path], entries: list[tuple[str, str]],
                               error: type[VhdxError]) -> None:
    child, parent = family
    craft.make_differencing(child, parent, locator=build_parent_locator(entries))
    expect_error(child, error, parent)


def test_parent_locator_key_value_count_huge(family: tuple[Path, Path]) -> None:
    child, parent = family
    locator = craft.make_differencing(child, parent)
    craft.patch(child, locator + 18, (0xFFFF).to_bytes(2, "little"))
    expect_error(child, CorruptStructureError, parent)


def test_unknown_parent_locator_type(family: tuple[Path, Path]) -> None:
    child, parent = family
    locator = craft.make_differencing(child, parent)
    craft.patch(child, locator, UNKNOWN_GUID.bytes_le)
    expect_error(child, UnsupportedError, parent)


def test_real_child_without_its_parent(tmp_path: Path) -> None:
    (entry,) = [e for e in load_expected() if e.id == "dissect.hypervisor/differencing.avhdx"]
    child = copy_to(image_of(entry), tmp_path)
    expect_error(child, ParentNotFoundError)


def test_real_child_with_the_wrong_parent(tmp_path: Path, bases: dict[str, Path]) -> None:
    (entry,) = [e for e in load_expected() if e.id == "dissect.hypervisor/differencing.avhdx"]
    child = copy_to(image_of(entry), tmp_path)
    wrong = copy_to(bases["dyn"], tmp_path, "wrong-parent.vhdx")
    expect_error(child, ParentMismatchError, wrong, parent=wrong)


def test_damaged_parent_reports_the_parents_error(family: tuple[Path, Path]) -> None:
    child, parent = family
    craft.make_differencing(child, parent)
    craft.flip_byte(parent, HEADER_1_OFFSET + 100)
    craft.flip_byte(parent, HEADER_2_OFFSET + 100)
    err = expect_error(child, ChecksumError, parent)
    assert err.image is not None and err.image.endswith("parent.vhdx")

