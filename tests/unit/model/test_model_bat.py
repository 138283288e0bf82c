"""BAT model: splitting payload from sector bitmap entries (VHDX-FORMAT.md 8.4) and the entry
checks of 8.2 and 8.7 (``vhdx.model.bat.validate``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from vhdx.constants import BAT_ENTRY_SIZE, MiB, PayloadBlockState as P, SectorBitmapState as SB
from vhdx.errors import CorruptStructureError, TruncatedError
from vhdx.model.bat import split, validate
from vhdx.model.geometry import DiskGeometry
from vhdx.structs.bat import make_entry

# 256 MiB blocks with 512-byte sectors: 16 blocks per chunk, so a 40-block disk has 3 chunks,
# the last one partial. BAT index of block b is b + b // 16; sector bitmap k sits at 17k + 16.
BS = 256 * MiB
G = DiskGeometry(40 * BS, BS, 512)
BAT_OFFSET = 2 * MiB
RESERVED = [(0, MiB, "header section"), (MiB, 2 * MiB, "log"), (2 * MiB, 3 * MiB, "BAT region"),
            (3 * MiB, 4 * MiB, "metadata region")]
FIRST = 4 * MiB  # first free byte after the regions
BIG = 1 << 45  # a file size past every block used below


def bat(payload: dict[int, tuple[int, int]] = {}, bitmap: dict[int, tuple[int, int]] = {},  # noqa: B006
        count: int | None = None) -> npt.NDArray[np.uint64]:
    entries = np.zeros(G.bat_entry_count_full if count is None else count, dtype=np.uint64)
    for block, (state, offset) in payload.items():
        entries[G.payload_bat_index(block)] = make_entry(state, offset)
    for chunk, (state, offset) in bitmap.items():
        entries[G.bitmap_bat_index(chunk)] = make_entry(state, offset)
    return entries


def check(entries: npt.NDArray[np.uint64], *, differencing: bool = False, file_size: int = BIG) -> list[str]:
    return validate(split(entries, G), G, differencing=differencing, file_size=file_size, reserved=RESERVED,
                    bat_offset=BAT_OFFSET)


def test_geometry_of_these_tests() -> None:
    assert (G.chunk_ratio, G.payload_block_count, G.sector_bitmap_block_count) == (16, 40, 3)
    assert G.bat_entry_count_full == 51


def test_split_picks_the_interleaved_entries() -> None:
    entries = np.arange(G.bat_entry_count_full, dtype=np.uint64) << np.uint64(20)  # entry i -> offset i MiB
    view = split(entries, G)
    expected_payload = [b + b // 16 for b in range(40)]
    assert (view.payload_offsets >> np.uint64(20)).tolist() == expected_payload
    assert (view.bitmap_offsets >> np.uint64(20)).tolist() == [16, 33, 50]
    assert view.payload_states.tolist() == [0] * 40


def test_split_short_bat_reads_missing_bitmap_entries_as_not_present() -> None:
    # Formula-A dynamic count: the last chunk's SB entry (index 50) is past the end.
    entries = bat({39: (P.FULLY_PRESENT, FIRST)}, count=G.bat_entry_count)
    assert G.bat_entry_count == 42  # 40 + (40 - 1) // 16
    view = split(entries, G)
    assert view.bitmap_states.tolist() == [0, 0, 0]
    assert view.payload_states[39] == P.FULLY_PRESENT


@pytest.mark.parametrize("state", [P.NOT_PRESENT, P.UNDEFINED, P.ZERO, P.UNMAPPED, P.UNMAPPED_V095])
@pytest.mark.parametrize("differencing", [False, True])
def test_states_without_storage_are_accepted(state: int, differencing: bool) -> None:
    # Their FileOffsetMB is reserved: even a nonsense value is not checked for overlaps.
    assert check(bat({b: (state, MiB) for b in range(40)}), differencing=differencing) == []


def test_contiguous_present_blocks() -> None:
    entries = bat({b: (P.FULLY_PRESENT, FIRST + b * BS) for b in range(40)})
    assert check(entries) == []
    assert check(entries, file_size=FIRST + 40 * BS) == []


def test_partially_present_with_its_bitmap_in_a_differencing_disk() -> None:
    entries = bat({17: (P.PARTIALLY_PRESENT, FIRST + MiB)}, {1: (SB.PRESENT, FIRST)})
    assert check(entries, differencing=True) == []


def entry_offset(block: int) -> int:
    return BAT_OFFSET + G.payload_bat_index(block) * BAT_ENTRY_SIZE


# (payload, bitmap, differencing, file size, error, BAT entry the error names or None)
ERRORS = [
    ("reserved state 4", {17: (4, 0)}, {}, False, BIG, CorruptStructureError, entry_offset(17)),
    ("reserved state 4 in a differencing disk", {33: (4, 0)}, {}, True, BIG, CorruptStructureError, entry_offset(33)),
    ("partially present without a parent", {5: (P.PARTIALLY_PRESENT, FIRST)}, {}, False, BIG, CorruptStructureError,
     entry_offset(5)),
    ("partially present without its bitmap", {20: (P.PARTIALLY_PRESENT, FIRST)}, {0: (SB.PRESENT, FIRST + BS)}, True,
     BIG, CorruptStructureError, entry_offset(20)),
    ("bitmap state 3", {}, {2: (3, FIRST)}, True, BIG, CorruptStructureError, BAT_OFFSET + 50 * BAT_ENTRY_SIZE),
    ("bitmap state 7", {}, {0: (7, FIRST)}, False, BIG, CorruptStructureError, BAT_OFFSET + 16 * BAT_ENTRY_SIZE),
    ("present at offset 0", {3: (P.FULLY_PRESENT, 0)}, {}, False, BIG, CorruptStructureError, entry_offset(3)),
    ("present inside the header section", {3: (P.FULLY_PRESENT, 0)}, {}, True, BIG, CorruptStructureError,
     entry_offset(3)),
    ("bitmap block at offset 0", {}, {1: (SB.PRESENT, 0)}, True, BIG, CorruptStructureError,
     BAT_OFFSET + 33 * BAT_ENTRY_SIZE),
    ("block over the log", {0: (P.FULLY_PRESENT, MiB)}, {}, False, BIG, CorruptStructureError, None),
    ("block over the BAT", {0: (P.FULLY_PRESENT, 2 * MiB)}, {}, False, BIG, CorruptStructureError, None),
    ("block over the metadata", {39: (P.FULLY_PRESENT, 3 * MiB)}, {}, False, BIG, CorruptStructureError, None),
    ("two blocks at one offset", {1: (P.FULLY_PRESENT, FIRST), 30: (P.FULLY_PRESENT, FIRST)}, {}, False, BIG,
     CorruptStructureError, None),
    ("two blocks overlapping", {1: (P.FULLY_PRESENT, FIRST), 2: (P.FULLY_PRESENT, FIRST + BS - MiB)}, {}, False, BIG,
     CorruptStructureError, None),
    ("bitmap block inside a payload block", {1: (P.FULLY_PRESENT, FIRST)}, {0: (SB.PRESENT, FIRST + 8 * MiB)}, True,
     BIG, CorruptStructureError, None),
    ("bitmap block over the metadata", {}, {0: (SB.PRESENT, 3 * MiB)}, True, BIG, CorruptStructureError, None),
    ("block at the end of the file", {9: (P.FULLY_PRESENT, FIRST + BS)}, {}, False, FIRST + BS, TruncatedError,
     entry_offset(9)),
    ("block far past the end of the file", {9: (P.FULLY_PRESENT, 1 << 44)}, {}, False, FIRST + BS, TruncatedError,
     entry_offset(9)),
    ("bitmap block past the end of the file", {}, {2: (SB.PRESENT, FIRST + BS)}, True, FIRST + BS, TruncatedError,
     BAT_OFFSET + 50 * BAT_ENTRY_SIZE),
]


@pytest.mark.parametrize(("payload", "bitmap", "differencing", "file_size", "error", "where"),
                         [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors(payload: dict[int, tuple[int, int]], bitmap: dict[int, tuple[int, int]], differencing: bool,
                file_size: int, error: type[Exception], where: int | None) -> None:
    with pytest.raises(error) as info:
        check(bat(payload, bitmap), differencing=differencing, file_size=file_size)
    assert type(info.value) is error
    assert info.value.structure == "BAT"
    if where is not None:
        assert info.value.offset == where


def test_partial_last_block_is_a_warning() -> None:
    # QEMU's fixed images end inside their last block (VHDX-FORMAT.md 8.7): tolerated, reported.
    warnings = check(bat({0: (P.FULLY_PRESENT, FIRST)}), file_size=FIRST + MiB)
    assert len(warnings) == 1 and "payload block 0" in warnings[0]


def test_bitmap_present_in_a_dynamic_disk_is_a_warning() -> None:
    warnings = check(bat({}, {1: (SB.PRESENT, FIRST)}))
    assert len(warnings) == 1 and "sector bitmap" in warnings[0]


def test_bitmap_entry_outside_the_bat_makes_partial_blocks_corrupt() -> None:
    # 8.5: when the last chunk's SB entry lies past the region, a PARTIALLY_PRESENT block there is corrupt.
    entries = bat({39: (P.PARTIALLY_PRESENT, FIRST)}, count=G.bat_entry_count)
    with pytest.raises(CorruptStructureError):
        check(entries, differencing=True)


def test_many_blocks_are_checked_in_bulk() -> None:
    # A large valid table (every block present, shuffled in the file) passes; one clash is found.
    g = DiskGeometry(4096 * MiB * 16, MiB, 512)
    rng = np.random.default_rng(1)
    order = rng.permutation(g.payload_block_count)
    entries = np.zeros(g.bat_entry_count_full, dtype=np.uint64)
    entries[g.payload_bat_indices()] = ((FIRST // MiB + order).astype(np.uint64) << np.uint64(20)) | np.uint64(6)
    assert validate(split(entries, g), g, differencing=False, file_size=BIG, reserved=RESERVED, bat_offset=BAT_OFFSET) == []
    entries[g.payload_bat_index(12345)] = entries[g.payload_bat_index(54321)]
    with pytest.raises(CorruptStructureError):
        validate(split(entries, g), g, differencing=False, file_size=BIG, reserved=RESERVED, bat_offset=BAT_OFFSET)
