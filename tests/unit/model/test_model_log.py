"""Log model: entry validity (VHDX-FORMAT.md 10.2), finding the active sequence in the ring (10.3)
and the replay preconditions. Entries are made with ``vhdx.model.log.build_entry`` and placed in
an in-memory ring; the expected active sequence follows from how they were placed."""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable

import pytest

from unit import spec_vectors as sv
from vhdx import checksum
from vhdx.constants import LOG_SECTOR_SIZE, MiB
from vhdx.errors import CorruptStructureError, TruncatedError
from vhdx.model.log import DataWrite, LogEntry, LogScan, ZeroWrite, build_entry, parse_entry, scan_log, validate_active
from vhdx.structs.log import LOG_ENTRY_CHECKSUM_OFFSET

GUID = uuid.UUID("a7a7a7a7-0000-4000-8000-000000000001")
OTHER_GUID = uuid.UUID("b8b8b8b8-0000-4000-8000-000000000002")
LOG_LENGTH = MiB
LOG_FILE_OFFSET = MiB  # where the log would sit in the file
S = LOG_SECTOR_SIZE


def sector(tag: int) -> bytes:
    """4 KiB whose first 8 and last 4 bytes (carried in the descriptor) differ from the middle."""
    tag &= 0xFF
    return bytes([tag ^ 0xFF]) * 8 + bytes([tag]) * (S - 12) + bytes([tag ^ 0x0F]) * 4


def entry(seq: int, tail: int, writes: list[DataWrite | ZeroWrite] | None = None, guid: uuid.UUID = GUID) -> bytes:
    if writes is None:
        writes = [DataWrite(4 * MiB + (seq % 256) * S, sector(seq))]
    return build_entry(log_guid=guid, sequence_number=seq, tail=tail, flushed_file_offset=8 * MiB,
                       last_file_offset=9 * MiB, writes=writes)


def ring(*placed: tuple[int, bytes], length: int = LOG_LENGTH) -> bytes:
    buf = bytearray(length)
    for offset, raw in placed:  # an entry may wrap past the end of the ring back to 0
        first = min(len(raw), length - offset)
        buf[offset : offset + first] = raw[:first]
        buf[: len(raw) - first] = raw[first:]
    return bytes(buf)


def active(scan: LogScan) -> list[tuple[int, int]]:
    return [(e.log_offset, e.sequence_number) for e in scan.active]


def test_build_entry_matches_the_known_answer() -> None:
    bat_sector = sv.LOG_SECTOR_FIRST_U64.to_bytes(8, "little") + bytes(S - 8)
    raw = build_entry(log_guid=sv.LOG_GUID, sequence_number=sv.LOG_SEQUENCE, tail=0, flushed_file_offset=sv.LOG_FLUSHED,
                      last_file_offset=sv.LOG_LAST, writes=[DataWrite(sv.LOG_TARGET, bat_sector)])
    assert raw == sv.LOG_ENTRY_BYTES
    assert checksum.stored(raw, LOG_ENTRY_CHECKSUM_OFFSET) == sv.LOG_CHECKSUM
    parsed = parse_entry(ring((0, raw)), 0, sv.LOG_GUID)
    assert parsed is not None and parsed.writes == (DataWrite(sv.LOG_TARGET, bat_sector),)


def test_entry_length_follows_the_descriptor_count() -> None:
    # 126 descriptors fit in the first sector; the 127th needs a second descriptor sector (10.1).
    zeros = [ZeroWrite(4 * MiB + i * S, S) for i in range(126)]
    assert len(entry(1, 0, zeros)) == S
    assert len(entry(1, 0, zeros + [ZeroWrite(0, S)])) == 2 * S
    assert len(entry(1, 0, zeros + [DataWrite(0, sector(1))])) == 3 * S


def test_build_entry_refuses_partial_sectors() -> None:
    with pytest.raises(ValueError):
        entry(1, 0, [DataWrite(0, b"short")])


def test_single_entry_tail_at_itself() -> None:
    writes = [DataWrite(3 * MiB, sector(1)), ZeroWrite(5 * MiB, 64 * S), DataWrite(3 * MiB + S, sector(2))]
    scan = scan_log(ring((40960, entry(7, 40960, writes))), GUID)
    assert active(scan) == [(40960, 7)]
    head = scan.head
    assert head is not None and head.writes == tuple(writes)
    assert head.flushed_file_offset == 8 * MiB and head.last_file_offset == 9 * MiB and head.log_guid == GUID


def chain(first_seq: int, start: int, count: int, tail: int | None = None, length: int = LOG_LENGTH
          ) -> list[tuple[int, bytes]]:
    """``count`` consecutive entries from ``start``; every Tail is ``tail`` (default: ``start``)."""
    out, pos = [], start
    for i in range(count):
        raw = entry(first_seq + i, start if tail is None else tail)
        out.append((pos, raw))
        pos = (pos + len(raw)) % length
    return out


def test_multi_entry_sequence() -> None:
    placed = chain(10, 0, 3)
    scan = scan_log(ring(*placed), GUID)
    assert active(scan) == [(0, 10), (2 * S, 11), (4 * S, 12)]
    assert [w.data for e in scan.active for w in e.writes] == [sector(10), sector(11), sector(12)]


def test_tail_in_the_middle_starts_replay_there() -> None:
    placed = chain(10, 0, 2) + [(4 * S, entry(12, 2 * S))]
    assert active(scan_log(ring(*placed), GUID)) == [(2 * S, 11), (4 * S, 12)]


def test_head_tail_at_itself_after_applied_entries() -> None:
    placed = chain(5, 0, 2) + [(4 * S, entry(7, 4 * S))]
    assert active(scan_log(ring(*placed), GUID)) == [(4 * S, 7)]


def test_wrapped_entry_at_the_end_of_the_ring() -> None:
    writes = [DataWrite(3 * MiB, sector(1)), DataWrite(3 * MiB + S, sector(2))]
    raw = entry(3, LOG_LENGTH - S, writes)  # 3 sectors: the descriptor sector at the end, data at 0 and 4K
    assert len(raw) == 3 * S
    scan = scan_log(ring((LOG_LENGTH - S, raw)), GUID)
    assert active(scan) == [(LOG_LENGTH - S, 3)]
    assert scan.active[0].writes == tuple(writes)


def test_sequence_continuing_across_the_end_of_the_ring() -> None:
    placed = chain(20, LOG_LENGTH - 4 * S, 3)  # at -16K, -8K, then 0
    assert [p for p, _ in placed] == [LOG_LENGTH - 4 * S, LOG_LENGTH - 2 * S, 0]
    assert active(scan_log(ring(*placed), GUID)) == [(LOG_LENGTH - 4 * S, 20), (LOG_LENGTH - 2 * S, 21), (0, 22)]


@pytest.mark.parametrize("newer_first", [False, True])
def test_stale_older_sequence_and_newer_one(newer_first: bool) -> None:
    old = chain(1, 0 if not newer_first else 64 * S, 2)
    new = chain(9, 64 * S if not newer_first else 0, 2)
    scan = scan_log(ring(*(old + new)), GUID)
    assert [seq for _, seq in active(scan)] == [9, 10]
    assert len(scan.entries) == 4


def test_torn_entry_ends_the_sequence() -> None:
    placed = chain(1, 0, 3)
    offset, raw = placed[2]
    torn = bytearray(raw)
    torn[S + 100] ^= 0x01  # inside its data sector: only the checksum can tell
    placed[2] = (offset, bytes(torn))
    scan = scan_log(ring(*placed), GUID)
    assert offset not in scan.entries
    assert active(scan) == [(0, 1), (2 * S, 2)]


def test_torn_only_entry_leaves_nothing_to_replay() -> None:
    raw = bytearray(entry(1, 0))
    raw[70] ^= 0x01  # inside the descriptor
    scan = scan_log(ring((0, bytes(raw))), GUID)
    assert scan.entries == {} and scan.active == () and scan.head is None


def test_wrong_log_guid_is_ignored() -> None:
    placed = chain(1, 0, 2) + [(4 * S, entry(3, 0, guid=OTHER_GUID))]
    scan = scan_log(ring(*placed), GUID)
    assert 4 * S not in scan.entries
    assert active(scan) == [(0, 1), (2 * S, 2)]
    # And the other GUID sees only its own entry, whose Tail is not in its chain.
    other = scan_log(ring(*placed), OTHER_GUID)
    assert list(other.entries) == [4 * S] and other.active == ()


def test_tail_pointing_nowhere_is_incomplete() -> None:
    scan = scan_log(ring((0, entry(4, 40 * S))), GUID)
    assert list(scan.entries) == [0] and scan.active == ()


def test_sequence_gap_breaks_the_chain() -> None:
    first = entry(1, 0)
    placed = [(0, first), (len(first), entry(3, 0))]  # 2 is missing: 3 cannot reach its Tail
    assert active(scan_log(ring(*placed), GUID)) == [(0, 1)]


def test_tail_must_be_inside_the_heads_own_chain() -> None:
    # Entry 2 at 64K claims its sequence starts at 0, where an unrelated entry 1 lies (not adjacent).
    placed = [(0, entry(1, 0)), (64 * S, entry(2, 0))]
    assert active(scan_log(ring(*placed), GUID)) == [(0, 1)]


def test_sequence_numbers_above_32_bits() -> None:
    seq = (1 << 32) + 5
    scan = scan_log(ring(*chain(seq, 0, 2)), GUID)
    assert [s for _, s in active(scan)] == [seq, seq + 1]


@pytest.mark.parametrize("log", [b"", bytes(LOG_LENGTH), bytes(S + 1), b"\xff" * (64 * S)],
                         ids=["empty", "zeros", "odd length", "0xff"])
def test_nothing_to_find(log: bytes) -> None:
    scan = scan_log(log, GUID)
    assert scan.entries == {} and scan.active == ()


def resealed(raw: bytes, mutate: Callable[[bytearray], None]) -> bytes:
    buf = bytearray(raw)
    mutate(buf)
    checksum.seal(buf, LOG_ENTRY_CHECKSUM_OFFSET)
    return bytes(buf)


def set_u32(at: int, value: int) -> Callable[[bytearray], None]:
    return lambda b: struct.pack_into("<I", b, at, value)


def set_u64(at: int, value: int) -> Callable[[bytearray], None]:
    return lambda b: struct.pack_into("<Q", b, at, value)


ONE = entry(5, 0, [DataWrite(3 * MiB, sector(1))])  # descriptor sector + one data sector
ZERO_ONE = entry(5, 0, [ZeroWrite(3 * MiB, 4 * S)])  # descriptor sector only
DESC = 64  # first descriptor
DATA = S  # first data sector

# (entry bytes after a mutation with a valid checksum, why it is invalid) -- 10.2 items 2, 3 and 5.
INVALID = [
    ("entry length 0", resealed(ONE, set_u32(8, 0))),
    ("entry length not a multiple of 4 KiB", resealed(ONE, set_u32(8, 2 * S + 512))),
    ("entry length over the log length", resealed(ONE, set_u32(8, LOG_LENGTH + S))),
    ("entry length huge", resealed(ONE, set_u32(8, 0xFFFFF000))),
    ("tail not a multiple of 4 KiB", resealed(ONE, set_u32(12, 100))),
    ("tail past the log", resealed(ONE, set_u32(12, LOG_LENGTH))),
    ("sequence number 0", resealed(ONE, set_u64(16, 0))),
    ("descriptor count needs more sectors", resealed(ZERO_ONE, set_u32(24, 127))),
    ("descriptor count huge", resealed(ONE, set_u32(24, 0xFFFFFFFF))),
    ("more data descriptors than data sectors", resealed(ZERO_ONE, lambda b: b.__setitem__(
        slice(DESC, DESC + 4), b"desc"))),
    ("unknown descriptor signature", resealed(ONE, lambda b: b.__setitem__(slice(DESC, DESC + 4), b"dsec"))),
    ("descriptor sequence differs", resealed(ONE, set_u64(DESC + 24, 6))),
    ("data descriptor offset not 4 KiB aligned", resealed(ONE, set_u64(DESC + 16, 3 * MiB + 512))),
    ("zero descriptor offset not 4 KiB aligned", resealed(ZERO_ONE, set_u64(DESC + 16, 3 * MiB + 512))),
    ("zero length not 4 KiB aligned", resealed(ZERO_ONE, set_u64(DESC + 8, 4 * S + 1))),
    ("zero descriptor sequence differs", resealed(ZERO_ONE, set_u64(DESC + 24, 4))),
    ("data sector signature", resealed(ONE, lambda b: b.__setitem__(slice(DATA, DATA + 4), b"DATA"))),
    ("data sector low sequence", resealed(ONE, set_u32(DATA + S - 4, 6))),
    ("data sector high sequence", resealed(ONE, set_u32(DATA + 4, 1))),
    ("bad checksum", bytes(ONE[:DATA + 50]) + bytes([ONE[DATA + 50] ^ 1]) + ONE[DATA + 51:]),
    ("signature", resealed(ONE, lambda b: b.__setitem__(slice(0, 4), b"LOGE"))),
]


@pytest.mark.parametrize("raw", [i[1] for i in INVALID], ids=[i[0] for i in INVALID])
def test_invalid_entries(raw: bytes) -> None:
    # The unmodified entry is valid at the same place (so the mutation is what makes it invalid).
    assert parse_entry(ring((8 * S, ONE if len(raw) == len(ONE) else ZERO_ONE)), 8 * S, GUID) is not None
    assert parse_entry(ring((8 * S, raw)), 8 * S, GUID) is None
    assert scan_log(ring((8 * S, raw)), GUID).entries == {}


def test_extra_trailing_sectors_are_accepted() -> None:
    # 10.2 item 3: a reader may accept sectors past what the descriptors need (covered by the checksum).
    raw = resealed(ONE + bytes(S), set_u32(8, len(ONE) + S))
    e = parse_entry(ring((0, raw)), 0, GUID)
    assert e is not None and e.length == len(ONE) + S and e.writes == (DataWrite(3 * MiB, sector(1)),)


def test_sequence_high_bits_are_checked() -> None:
    seq = (7 << 32) | 5
    raw = entry(seq, 0)
    assert parse_entry(ring((0, raw)), 0, GUID) is not None
    assert parse_entry(ring((0, resealed(raw, set_u32(DATA + 4, 6)))), 0, GUID) is None


def head_scan(*writes: DataWrite | ZeroWrite, flushed: int = 8 * MiB) -> LogScan:
    raw = build_entry(log_guid=GUID, sequence_number=1, tail=0, flushed_file_offset=flushed, last_file_offset=flushed,
                      writes=list(writes))
    return scan_log(ring((0, raw)), GUID)


@pytest.mark.parametrize(("writes", "file_size", "error"), [
    ([DataWrite(3 * MiB, sector(1))], 8 * MiB, None),
    ([DataWrite(3 * MiB, sector(1))], 8 * MiB - 1, TruncatedError),
    ([DataWrite(0, sector(1))], 8 * MiB, CorruptStructureError),
    ([DataWrite(128 * 1024, sector(1))], 8 * MiB, CorruptStructureError),
    ([DataWrite(192 * 1024, sector(1))], 8 * MiB, None),  # region table 1: legitimately logged
    ([DataWrite(LOG_FILE_OFFSET + S, sector(1))], 8 * MiB, CorruptStructureError),
    ([ZeroWrite(LOG_FILE_OFFSET - S, 2 * S)], 8 * MiB, CorruptStructureError),
    ([ZeroWrite(LOG_FILE_OFFSET + LOG_LENGTH, 2 * S)], 8 * MiB, None),
], ids=["ok", "file shorter than flushed", "file identifier", "header 2", "region table 1", "inside the log",
        "zeroing into the log", "right after the log"])
def test_validate_active(writes: list[DataWrite | ZeroWrite], file_size: int, error: type[Exception] | None) -> None:
    scan = head_scan(*writes)
    assert scan.head is not None
    if error is None:
        validate_active(scan, file_size, LOG_FILE_OFFSET, LOG_LENGTH, LOG_FILE_OFFSET)
    else:
        with pytest.raises(error):
            validate_active(scan, file_size, LOG_FILE_OFFSET, LOG_LENGTH, LOG_FILE_OFFSET)


def test_validate_active_without_a_sequence() -> None:
    validate_active(LogScan({}, ()), 0, LOG_FILE_OFFSET, LOG_LENGTH, LOG_FILE_OFFSET)


def test_log_entry_is_frozen() -> None:
    e = head_scan(DataWrite(3 * MiB, sector(1))).head
    assert isinstance(e, LogEntry)
    with pytest.raises(AttributeError):
        e.sequence_number = 2  # type: ignore[misc]
