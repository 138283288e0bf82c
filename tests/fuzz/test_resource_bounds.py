"""Resource bounds (issue #7, item 2): every allocation and loop driven by file content is bounded
by what the file holds, or by the BAT its declared geometry needs (README "Limits"), and hostile
counts and lengths are refused before anything large is allocated or looped over.

Each test crafts the hostile field with the library's own builders (valid checksums, so the
damage reaches the rule under test), opens under ``tracemalloc`` and asserts the peak, and runs
under the fuzzers' watchdog (``surface.watchdog``): a hang detector set far above the normal cost,
never a timing assertion. Each hostile case has a positive control of the same shape that stays
within the rule and works, so a refusal cannot come from broken crafting.

Allocations audited (and where each bound lives):

===============================  ==========================================================================
content                          bound
===============================  ==========================================================================
BAT                              the declared geometry's need (<= 64 TiB, so <= 513 MiB of entries); the
                                 region must hold it and lie inside the file, checked before reading
check's BAT scan                 not padded past the region when the geometry needs more than the file
region / metadata tables         entry counts <= 2047, checked before the entries are parsed
metadata items                   each <= 1 MiB, inside the region, not overlapping (only known ones read)
parent locator                   <= MAX_PARENT_LOCATOR_ENTRIES entries; strings no longer than the item
log region                       inside the file; descriptors checked in bulk before the checksum
log entries                      extra sectors checksummed <= LOG_EXTRA_CHECKSUM_FACTOR x log length
log replay (memory)              one O(n log n) overlay build, whatever the order or overlap of writes
log replay (disk)                zero descriptors write only what lies inside the file
parent chain                     MAX_CHAIN_DEPTH layers, cycles refused by (device, inode)
partition tables                 GPT_MAX_ENTRY_ARRAY bytes, MAX_LOGICAL_PARTITIONS EBRs (ops/partitions)
forensic scans                   fixed-size read buffers; released-block marks only inside the file
===============================  ==========================================================================
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import craft
import vhdx
from vhdx import checksum
from crash.recording import RecordingFile, Write
from vhdx.constants import (
    BAT_ENTRY_SIZE,
    LOG_EXTRA_CHECKSUM_FACTOR,
    LOG_SECTOR_SIZE,
    MAX_CHAIN_DEPTH,
    MAX_PARENT_LOCATOR_ENTRIES,
    PARENT_KEY_LINKAGE,
    PARENT_KEY_RELATIVE_PATH,
    VHDX_PARENT_LOCATOR_TYPE_GUID,
    GiB,
    MiB,
    PayloadBlockState,
    TiB,
)
from vhdx.engine import chain as chain_module
from vhdx.engine.source import OverlaySource
from vhdx.errors import (
    CorruptStructureError,
    LogReplayError,
    ParentChainError,
    UnsupportedError,
    VhdxError,
)
from vhdx.model.log import DataWrite, ZeroWrite, build_entry
from vhdx.ops import check
from vhdx.ops.forensics import find_hidden, log_history
from vhdx.structs.log import LOG_ENTRY_CHECKSUM_OFFSET

from .surface import watchdog

SMALL = 24 * MiB  # peak traced memory allowed for opening a few-MiB hostile file
HANG = 120.0  # seconds: a hang detector, far above the normal cost of any case here
LOG_GUID = uuid.UUID("7e57a11c-0000-4000-8000-00000000f022")


def measure(fn: Callable[[], object]) -> tuple[object, BaseException | None, int]:
    """Run ``fn`` under the watchdog and tracemalloc: (result, VhdxError raised or None, peak bytes)."""
    tracemalloc.start()
    try:
        with watchdog(HANG):
            try:
                result, error = fn(), None
            except VhdxError as err:
                result, error = None, err
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, error, peak


def open_and_read(path: Path, **kwargs: object) -> bytes:
    with vhdx.open(path, **kwargs) as disk:  # type: ignore[arg-type]
        return disk.read()


def dynamic(path: Path, size: int = 8 * MiB) -> Path:
    with vhdx.create(path, size, block_size=MiB) as disk:
        disk.pwrite(0, b"\x11" * MiB)
        disk.pwrite(5 * MiB, b"\x22" * MiB)
    return path


# --- parent locator ---------------------------------------------------------------------------------


def locator_bytes(parent: Path, child: Path, *, count: int, shared_value: int = 0) -> bytes:
    """A VHDX parent locator with the two keys a reader needs plus ``count - 2`` more.

    The extra keys are distinct two-character strings taken from one pool; with ``shared_value``
    every extra value is the same ``shared_value``-byte string (hostile: decoded once per entry),
    otherwise each has its own short value (honest).
    """
    linkage = "{" + str(craft.read_layout_headers(parent).current.data_write_guid) + "}"
    fixed = [(PARENT_KEY_LINKAGE, linkage), (PARENT_KEY_RELATIVE_PATH, craft.windows_relative(child, parent))]
    extra = count - len(fixed)
    table_end = 20 + 12 * count
    strings = bytearray()
    entries = []

    def put(text: bytes) -> int:
        at = table_end + len(strings)
        strings.extend(text)
        return at

    for key, value in fixed:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        entries.append((put(k), put(v), len(k), len(v)))
    pool_at = put("".join(chr(0x4E00 + i) for i in range(extra + 1)).encode("utf-16-le"))
    if shared_value:
        big_at = put(("v" * (shared_value // 2)).encode("utf-16-le"))
        entries += [(pool_at + 2 * i, big_at, 4, shared_value) for i in range(extra)]
    else:
        entries += [(pool_at + 2 * i, put(f"v{i}".encode("utf-16-le")), 4, len(f"v{i}") * 2) for i in range(extra)]
    head = VHDX_PARENT_LOCATOR_TYPE_GUID.bytes_le + struct.pack("<HH", 0, count)
    return head + b"".join(struct.pack("<IIHH", *e) for e in entries) + bytes(strings)


@pytest.fixture
def family(tmp_path: Path) -> tuple[Path, Path]:
    parent = dynamic(tmp_path / "parent.vhdx")
    child = tmp_path / "child.avhdx"
    vhdx.create(child, 8 * MiB, block_size=MiB).close()
    return parent, child


def test_parent_locator_with_many_honest_entries_opens(family: tuple[Path, Path]) -> None:
    parent, child = family
    craft.make_differencing(child, parent, locator=locator_bytes(parent, child, count=MAX_PARENT_LOCATOR_ENTRIES))
    data, error, peak = measure(lambda: open_and_read(child))
    assert error is None, error
    assert data == open_and_read(parent)
    assert peak < SMALL + 2 * 8 * MiB  # the read buffers of two 8 MiB disks


def test_parent_locator_count_past_the_limit_is_refused(family: tuple[Path, Path]) -> None:
    parent, child = family
    craft.make_differencing(child, parent, locator=locator_bytes(parent, child, count=MAX_PARENT_LOCATOR_ENTRIES + 1))
    _, error, peak = measure(lambda: open_and_read(child))
    assert isinstance(error, UnsupportedError) and "key/value entries" in str(error)
    assert peak < SMALL


def test_parent_locator_strings_decoded_again_and_again_are_refused(family: tuple[Path, Path]) -> None:
    """1000 entries naming one 64 KiB value: 64 MB of strings from a 90 KB item (before the fix,
    an item of the same shape with 20000 entries took 660 MB and 12 s to open)."""
    parent, child = family
    craft.make_differencing(child, parent, locator=locator_bytes(parent, child, count=1000, shared_value=65534))
    _, error, peak = measure(lambda: open_and_read(child))
    assert isinstance(error, CorruptStructureError) and "overlap" in str(error)
    assert peak < SMALL
    _, error, peak = measure(lambda: check(child))  # the check parses the locator the same way
    assert error is None and peak < SMALL


# --- the log ------------------------------------------------------------------------------------------


def write_log(path: Path, raw: bytes, at: int = 0) -> None:
    craft.write_log_entries(path, [(at, raw)], LOG_GUID)


def test_log_packed_with_zero_descriptors_replays_in_linear_work(tmp_path: Path) -> None:
    """31000 zero descriptors (all a 1 MiB log can hold), each on its own sector, in descending
    order: the in-memory replay used to rebuild its whole range list per write (minutes here)."""
    path = dynamic(tmp_path / "disk.vhdx")
    layout = craft.read_layout(path)
    count = 31000
    sectors_per_block = MiB // LOG_SECTOR_SIZE  # the first ones cover block 5; the rest lie past the end
    writes = [ZeroWrite((5 * MiB if s < sectors_per_block else 64 * MiB) + LOG_SECTOR_SIZE * s, LOG_SECTOR_SIZE)
              for s in reversed(range(count))]
    raw = build_entry(log_guid=LOG_GUID, sequence_number=1, tail=0, flushed_file_offset=layout.file_size,
                      last_file_offset=layout.file_size, writes=writes)
    assert len(raw) <= layout.log_length
    write_log(path, raw)
    data, error, peak = measure(lambda: open_and_read(path))
    assert error is None, error
    assert isinstance(data, bytes)
    assert data[5 * MiB : 6 * MiB] == bytes(MiB)  # the zero descriptors cover the whole block
    assert data[:MiB] == b"\x11" * MiB
    assert peak < SMALL + 3 * 8 * MiB


def test_overlapping_candidate_entries_exhaust_the_checksum_budget(tmp_path: Path) -> None:
    """Every sector of the log starts an entry that claims the rest of the log (no descriptors,
    so all of it is 'extra' sectors): checksumming each would cost the log length squared."""
    path = dynamic(tmp_path / "disk.vhdx")
    layout = craft.read_layout(path)
    log = bytearray(layout.log_length)
    for start in range(0, layout.log_length, LOG_SECTOR_SIZE):
        entry = bytearray(build_entry(log_guid=LOG_GUID, sequence_number=1 + start // LOG_SECTOR_SIZE, tail=start,
                                      flushed_file_offset=layout.file_size, last_file_offset=layout.file_size,
                                      writes=[]))
        entry[8:12] = (layout.log_length - start).to_bytes(4, "little")  # EntryLength: to the end of the log
        log[start : start + LOG_SECTOR_SIZE] = entry[:LOG_SECTOR_SIZE]
    write_log(path, bytes(log))
    for fn in (lambda: open_and_read(path), lambda: log_history(path)):
        _, error, peak = measure(fn)
        assert isinstance(error, LogReplayError) and "past their descriptors" in str(error)
        assert peak < SMALL
    report, error, _ = measure(lambda: check(path))
    assert error is None and report.exit_status != 0  # type: ignore[union-attr]


def test_an_entry_with_a_few_extra_sectors_still_replays(tmp_path: Path) -> None:
    """Positive control: MS-VHDX lets an entry carry sectors past its descriptors; one entry
    with LOG_EXTRA_CHECKSUM_FACTOR x 16 KiB of them is well inside the budget."""
    path = dynamic(tmp_path / "disk.vhdx")
    layout = craft.read_layout(path)
    bat_sector = layout.bat_offset
    current = craft.read_bytes(path, bat_sector, LOG_SECTOR_SIZE)
    new = bytearray(current)
    new[5 * BAT_ENTRY_SIZE : 6 * BAT_ENTRY_SIZE] = int(PayloadBlockState.ZERO).to_bytes(BAT_ENTRY_SIZE, "little")
    raw = bytearray(build_entry(log_guid=LOG_GUID, sequence_number=1, tail=0, flushed_file_offset=layout.file_size,
                                last_file_offset=layout.file_size, writes=[DataWrite(bat_sector, bytes(new))]))
    extra = LOG_EXTRA_CHECKSUM_FACTOR * 4 * LOG_SECTOR_SIZE
    raw[8:12] = (len(raw) + extra).to_bytes(4, "little")
    raw += bytes(extra)
    checksum.seal(raw, LOG_ENTRY_CHECKSUM_OFFSET)
    write_log(path, bytes(raw))
    data, error, _ = measure(lambda: open_and_read(path))
    assert error is None, error
    assert data[5 * MiB : 6 * MiB] == bytes(MiB)  # the logged BAT sector was replayed


def test_zero_descriptor_claiming_a_terabyte_is_replayed_without_writing_it(tmp_path: Path) -> None:
    """A writable open replays the log in place: zeros past the end of the file are already
    there, so only the part inside the file is written (it used to write the whole terabyte)."""
    path = dynamic(tmp_path / "disk.vhdx")
    layout = craft.read_layout(path)
    raw = build_entry(log_guid=LOG_GUID, sequence_number=1, tail=0, flushed_file_offset=layout.file_size,
                      last_file_offset=layout.file_size, writes=[ZeroWrite(layout.file_size - MiB, TiB)])
    write_log(path, raw)
    rec = RecordingFile(path.read_bytes(), name=str(path))
    _, error, peak = measure(lambda: vhdx.open(rec, "r+b").close())
    assert error is None, error
    written = sum(len(op.data) for op in rec.ops if isinstance(op, Write))
    assert written < 2 * MiB, written  # the last MiB of the file, plus headers
    assert len(rec.data) == layout.file_size
    assert peak < SMALL + 3 * layout.file_size  # the RecordingFile's own buffers


# --- geometry, tables, chains ---------------------------------------------------------------------------


@pytest.mark.parametrize("virtual_size", [64 * TiB, 16 * TiB], ids=["64TiB", "16TiB"])
def test_geometry_needing_a_bat_beyond_the_file_is_refused_before_reading_it(tmp_path: Path,
                                                                             virtual_size: int) -> None:
    """The metadata declares a disk whose BAT the 1 MiB region cannot hold: open and check stop
    before allocating it (check used to pad the missing entries: 773 MB for a 9 MiB file)."""
    path = dynamic(tmp_path / "disk.vhdx")
    layout = craft.read_layout(path)
    craft.rewrite_metadata(path, craft.metadata_items(layout, virtual_disk_size=virtual_size), layout)
    for fn in (lambda: open_and_read(path), lambda: find_hidden(path)):
        _, error, peak = measure(fn)
        assert isinstance(error, CorruptStructureError) and "BAT region holds" in str(error)
        assert peak < SMALL
    report, error, peak = measure(lambda: check(path))
    assert error is None and peak < SMALL
    assert report.exit_status == 2  # type: ignore[union-attr]


def test_a_large_declared_bat_costs_a_small_multiple_of_itself(tmp_path: Path) -> None:
    """The documented limit: opening reads the whole BAT, and the peak stays within a few times
    it (README "Limits"). 4 TiB with 1 MiB blocks: 4 Mi entries, a 32 MiB BAT."""
    path = tmp_path / "big.vhdx"
    vhdx.create(path, 4 * TiB, block_size=MiB).close()
    bat = craft.read_layout(path).region_table.bat.length
    _, error, peak = measure(lambda: vhdx.open(path).close())
    assert error is None
    assert 32 * MiB <= bat and peak < 4 * bat + 16 * MiB, (bat, peak)


@pytest.mark.parametrize(("where", "count"), [("region table", 0xFFFFFFFF), ("metadata table", 0xFFFF)])
def test_huge_table_counts_are_refused_before_the_entries_are_parsed(tmp_path: Path, where: str, count: int) -> None:
    path = dynamic(tmp_path / "disk.vhdx")
    if where == "region table":
        craft.patch_region_table_bytes(path, lambda b: b.__setitem__(slice(8, 12), count.to_bytes(4, "little")))
    else:
        layout = craft.read_layout(path)
        craft.patch(path, layout.metadata_offset + 10, count.to_bytes(2, "little"))
    _, error, peak = measure(lambda: open_and_read(path))
    assert isinstance(error, CorruptStructureError) and "entry count" in str(error)
    assert peak < SMALL


@pytest.mark.parametrize(("offset", "length"), [(0xFFFFFFFF, 8), (0xFFF00000, 0x100000), (0x10000, 0xFFFFFFFF)],
                         ids=["offset past the region", "item ending past the region", "length 4 GiB"])
def test_metadata_item_outside_its_region_is_refused_before_it_is_read(tmp_path: Path, offset: int,
                                                                       length: int) -> None:
    path = dynamic(tmp_path / "disk.vhdx")
    layout = craft.read_layout(path)
    first_entry = layout.metadata_offset + 32  # the file parameters entry: offset at +16, length at +20
    assert craft.read_bytes(path, first_entry + 16, 8) == struct.pack("<II", 0x10000, 8)  # as create lays it out
    craft.patch(path, first_entry + 16, struct.pack("<II", offset, length))
    _, error, peak = measure(lambda: open_and_read(path))
    assert isinstance(error, CorruptStructureError), error
    assert "outside the metadata region" in str(error) or "over 1 MiB" in str(error), error
    assert peak < SMALL


def test_chain_deeper_than_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Depth (parents below the image) is guarded before each parent is opened (the limit is
    lowered here so that the test needs five files, not 130); the chain at the limit still opens."""
    files = [dynamic(tmp_path / "d0.vhdx")]
    for i in range(1, 5):
        files.append(tmp_path / f"d{i}.avhdx")
        vhdx.create(files[-1], parent=files[-2], block_size=MiB).close()
    assert MAX_CHAIN_DEPTH >= 128
    monkeypatch.setattr(chain_module, "MAX_CHAIN_DEPTH", 3)
    data, error, _ = measure(lambda: open_and_read(files[3]))  # three parents
    assert error is None and data == open_and_read(files[0])
    _, error, peak = measure(lambda: open_and_read(files[4]))  # four
    assert isinstance(error, ParentChainError) and "deeper than 3" in str(error)
    assert peak < SMALL + 8 * MiB


def test_released_block_marks_stay_inside_the_file(tmp_path: Path) -> None:
    """find_hidden marks free space that a released BAT entry still names; entries naming
    offsets past the end of the file (65536 of them here) mark nothing and cost nothing."""
    path = tmp_path / "disk.vhdx"
    with vhdx.create(path, 64 * GiB, block_size=MiB) as disk:
        disk.pwrite(0, b"\x11" * MiB)
    layout = craft.read_layout(path)
    g = layout.geometry
    bat = layout.bat.copy()
    idx = g.payload_bat_indices()[1:]
    bat[idx] = (np.uint64(PayloadBlockState.ZERO)
                | ((np.arange(len(idx), dtype=np.uint64) + np.uint64(1 << 20)) << np.uint64(20)))
    craft.patch(path, layout.bat_offset, bat.astype("<u8").tobytes())
    result, error, peak = measure(lambda: find_hidden(path))
    assert error is None
    assert not any(r.kind == "released" for r in result.regions)  # type: ignore[union-attr]
    assert peak < SMALL + 4 * layout.bat_length


# --- the in-memory replay overlay ------------------------------------------------------------------------


@settings(max_examples=200)
@given(writes=st.lists(st.tuples(st.integers(0, 200), st.integers(1, 40), st.booleans(), st.integers(1, 255)),
                       max_size=40),
       base_size=st.integers(0, 150), extra_first=st.booleans())
def test_overlay_built_at_once_matches_writes_applied_in_order(writes: list[tuple[int, int, bool, int]],
                                                              base_size: int, extra_first: bool) -> None:
    """Oracle: a bytearray model with every write applied in order (later ones win)."""
    base = bytes((i * 7 + 3) % 256 for i in range(base_size))
    model = bytearray(base)
    overlay = OverlaySource(_Bytes(base))
    batch: list[tuple[int, bytes | None, int]] = []
    if extra_first:  # something laid with add() first must lose to everything after it
        overlay.add(10, b"\xee" * 30)
        model.extend(bytes(max(0, 40 - len(model))))
        model[10:40] = b"\xee" * 30
    for offset, length, zero, byte in writes:
        data = None if zero else bytes([byte]) * length
        batch.append((offset, data, length))
        end = offset + length
        model.extend(bytes(max(0, end - len(model))))
        model[offset:end] = bytes(length) if zero else data  # type: ignore[index]
    overlay.add_many(batch)
    size = max(len(model), overlay.size())
    buf = bytearray(size)
    got = overlay.readinto(0, memoryview(buf))
    assert bytes(buf[:got]) == bytes(model) + bytes(got - len(model))


class _Bytes:
    """A read-only RandomAccess over bytes."""

    name = "<bytes>"

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self._size = len(data)

    def size(self) -> int:
        return self._size

    def readinto(self, offset: int, buf: memoryview) -> int:
        self._data.seek(offset)
        return self._data.readinto(buf)

    def close(self) -> None:
        pass

