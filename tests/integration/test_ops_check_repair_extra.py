"""``vhdx.ops.check`` repairs of two more kinds of damage, in the damaged-image style of
test_ops_check.py: a damaged file type identifier (MS-VHDX 2.2.1), and two valid headers with
equal sequence numbers but different contents (MS-VHDX 2.2.2; VHDX-FORMAT.md 5.2: neither is
current).

Oracles: the damage each case does (so the expected finding follows from the rule it breaks), a
model of the writes that built the image (helpers.WriteModel), the header and identifier bytes
read before the damage, file digests for "not repaired means untouched", and qemu-img check /
compare for the repaired files.
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
from craft import (
    HEADER_SLOTS,
    patch,
    read_bytes,
    read_layout,
    read_layout_headers,
    unchanged,
    write_header,
)
from helpers import WriteModel, copy_to, fixture_path, require_tool, run

import vhdx
from vhdx.constants import BAT_ENTRY_SIZE, CREATOR_SIZE, FILE_IDENTIFIER_SIGNATURE, LOG_SECTOR_SIZE, PayloadBlockState
from vhdx.create import default_creator
from vhdx.model.header import Header, parse_header
from vhdx.model.log import DataWrite, build_entry
from vhdx.ops.check import check

MiB = 1 << 20
SIZE = 32 * MiB
CREATOR_END = len(FILE_IDENTIFIER_SIGNATURE) + CREATOR_SIZE


@pytest.fixture()
def image(tmp_path: Path) -> tuple[Path, WriteModel]:
    path = tmp_path / "image.vhdx"
    model = WriteModel(SIZE)
    with vhdx.create(path, SIZE, block_size=MiB, creator="Builder 1.2 (test)") as disk:
        for offset, length, byte in ((0, 2 * MiB, 0x11), (9 * MiB, MiB, 0x22)):
            disk.pwrite(offset, bytes([byte]) * length)
            model.fill(offset, length, byte)
    return path, model


def read_disk(path: Path) -> bytes:
    with vhdx.open(path) as disk:
        return disk.read()


def headers(path: Path) -> tuple[Header, Header]:
    return (parse_header(read_bytes(path, HEADER_SLOTS[0], 4096), HEADER_SLOTS[0]),
            parse_header(read_bytes(path, HEADER_SLOTS[1], 4096), HEADER_SLOTS[1]))


def findings(result: object) -> list[tuple[str, str, str, bool]]:
    return [(f.structure, f.severity, f.message, f.fixed) for f in result.findings]  # type: ignore[attr-defined]


def qemu_clean(path: Path) -> None:
    require_tool("qemu-img")
    proc = run("qemu-img", "check", "-f", "vhdx", str(path), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- the file type identifier -------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["signature", "signature-case", "first-byte"])
def test_identifier_signature_restored_creator_kept(image: tuple[Path, WriteModel], damage: str) -> None:
    path, model = image
    before = read_bytes(path, 0, CREATOR_END)
    old_headers = read_layout_headers(path).current
    patch(path, 0, {"signature": bytes(8), "signature-case": b"VHDXFILE", "first-byte": b"w"}[damage])
    with pytest.raises(vhdx.VhdxError):
        vhdx.open(path)
    first = check(path)
    assert ("file identifier", "corruption") in {(f.structure, f.severity) for f in first.findings}
    result = check(path, repair=True)
    assert result.exit_status == 0 and result.corruptions_fixed == 1, findings(result)
    assert [a.action for a in result.repairs] == ["restore-file-identifier"]
    assert "Builder 1.2 (test)" in result.repairs[0].message
    assert read_bytes(path, 0, CREATOR_END) == before  # signature and the original creator string
    current = read_layout_headers(path).current
    assert current.data_write_guid == old_headers.data_write_guid  # nothing a reader sees changed
    assert current.file_write_guid != old_headers.file_write_guid  # a writable session happened
    assert read_disk(path) == model.full()
    qemu_clean(path)


@pytest.mark.parametrize("garbage", ["lone-surrogates", "control-characters"])
def test_identifier_with_unreadable_creator_gets_ours(image: tuple[Path, WriteModel], garbage: str) -> None:
    path, model = image
    junk = {"lone-surrogates": b"\x00\xdb" * 40, "control-characters": b"\x01\x00\x02\x00" * 40}[garbage]
    patch(path, 0, b"\xa5" * 8 + junk)
    result = check(path, repair=True)
    assert result.exit_status == 0, findings(result)
    assert "unreadable" in result.repairs[0].message
    raw = read_bytes(path, 0, 64 * 1024)
    assert raw[:8] == FILE_IDENTIFIER_SIGNATURE
    assert raw[8:CREATOR_END].decode("utf-16-le").rstrip("\0") == default_creator()
    assert not any(raw[CREATOR_END:])  # the reserved rest is zero
    with vhdx.open(path) as disk:
        assert disk.info().creator == default_creator()
    assert read_disk(path) == model.full()


def test_identifier_of_a_qemu_image(tmp_path: Path) -> None:
    require_tool("qemu-img")
    original = fixture_path("fixtures/qemu/dyn-64M-bs1M.vhdx.xz", "dyn-64M-bs1M.vhdx")
    path = copy_to(original, tmp_path, "work.vhdx")
    patch(path, 0, b"vhdxfil\xff")
    assert run("qemu-img", "info", "-f", "vhdx", str(path), check=False).returncode != 0  # QEMU refuses it too
    result = check(path, repair=True)
    assert result.exit_status == 0, findings(result)
    assert read_bytes(path, 0, CREATOR_END) == read_bytes(original, 0, CREATOR_END)  # "QEMU v7.2.22" kept
    qemu_clean(path)
    assert run("qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", str(original), str(path), check=False).returncode == 0


def test_identifier_not_restored_without_a_current_header(image: tuple[Path, WriteModel]) -> None:
    # Both headers damaged: the file is still recognised (its region tables are valid) but no
    # session can start, so nothing is written.
    path, _model = image
    patch(path, 0, b"XXXXXXXX")
    for slot in HEADER_SLOTS:
        patch(path, slot + 100, b"\xee")
    with unchanged(path):
        result = check(path, repair=True)
    assert result.exit_status == 2 and result.repairs == []
    assert ("file identifier", "corruption") in {(f.structure, f.severity) for f in result.findings}


# --- equal sequence numbers, different headers ---------------------------------------------------------


def tie(path: Path, change1: dict[str, object], change2: dict[str, object]) -> tuple[Header, Header]:
    """Write both slots with the same sequence number and different fields."""
    h = read_layout_headers(path).current
    seq = h.sequence_number + 5
    h1 = dataclasses.replace(h, sequence_number=seq, **change1)  # type: ignore[arg-type]
    h2 = dataclasses.replace(h, sequence_number=seq, **change2)  # type: ignore[arg-type]
    write_header(path, 1, h1)
    write_header(path, 2, h2)
    return headers(path)


def log_entry_setting_block(path: Path, block: int, byte: int, log_offset: int, guid: uuid.UUID) -> None:
    """A block of ``byte`` appended to the file, and a log entry (not replayed) at ``log_offset``
    that points ``block`` at it; the headers are left to the caller."""
    layout = read_layout(path)
    new_block = layout.file_size
    with open(path, "r+b") as f:
        f.seek(new_block)
        f.write(bytes([byte]) * MiB)
    entry_at = layout.payload_entry_offset(block)
    sector_at = entry_at - entry_at % LOG_SECTOR_SIZE
    sector = bytearray(read_bytes(path, sector_at, LOG_SECTOR_SIZE))
    value = int(PayloadBlockState.FULLY_PRESENT) | new_block
    sector[entry_at - sector_at : entry_at - sector_at + BAT_ENTRY_SIZE] = value.to_bytes(BAT_ENTRY_SIZE, "little")
    size = new_block + MiB
    raw = build_entry(log_guid=guid, sequence_number=1, tail=log_offset, flushed_file_offset=size,
                      last_file_offset=size, writes=[DataWrite(sector_at, bytes(sector))])
    patch(path, layout.log_offset + log_offset, raw)


def assert_resolved(path: Path, kept: Header, result: object) -> None:
    h1, h2 = headers(path)
    assert {h1.sequence_number, h2.sequence_number} == {kept.sequence_number + 1, kept.sequence_number + 2}
    for h in (h1, h2):
        # Every field of the chosen header, a new FileWriteGuid (and LogGuid 0 once a log was replayed).
        assert (h.data_write_guid, h.log_offset, h.log_length, h.version) == (
            kept.data_write_guid, kept.log_offset, kept.log_length, kept.version)
    assert h1.file_write_guid == h2.file_write_guid != kept.file_write_guid
    assert check(path).exit_status == 0


def test_tie_without_logs_keeps_header_1(image: tuple[Path, WriteModel]) -> None:
    path, model = image
    h1, _h2 = tie(path, {"data_write_guid": uuid.uuid4()}, {"data_write_guid": uuid.uuid4()})
    with pytest.raises(vhdx.VhdxError):
        vhdx.open(path)
    first = check(path)
    assert {(f.structure, f.severity) for f in first.findings if f.severity == "corruption"} == {("headers", "corruption")}
    assert "keeps header 1" in first.findings[0].message
    result = check(path, repair=True)
    assert result.exit_status == 0 and result.corruptions_fixed == 1, findings(result)
    assert [a.action for a in result.repairs] == ["choose-header"]
    assert str(h1.data_write_guid) in result.repairs[0].message
    assert_resolved(path, h1, result)
    assert read_disk(path) == model.full()
    qemu_clean(path)


def test_tie_keeps_the_header_whose_log_must_be_replayed(image: tuple[Path, WriteModel]) -> None:
    # Header 2 names a log holding a committed change (block 20 -> 0x77); header 1 says the log is
    # empty. Keeping header 1 would silently drop the change: header 2 must win, then be replayed.
    path, model = image
    guid = uuid.uuid4()
    log_entry_setting_block(path, 20, 0x77, 0, guid)
    _h1, h2 = tie(path, {"data_write_guid": uuid.uuid4()}, {"log_guid": guid})
    result = check(path, repair=True)
    assert result.exit_status == 0, findings(result)
    assert [a.action for a in result.repairs] == ["choose-header", "replay-log"]
    current = read_layout_headers(path).current
    assert current.data_write_guid == h2.data_write_guid and current.log_is_empty
    model.fill(20 * MiB, MiB, 0x77)
    assert read_disk(path) == model.full()
    qemu_clean(path)


def test_tie_with_one_header_breaking_a_rule(image: tuple[Path, WriteModel]) -> None:
    path, model = image
    _h1, h2 = tie(path, {"log_offset": 4096}, {"data_write_guid": uuid.uuid4()})  # header 1: log misaligned
    first = check(path)
    assert "keeps header 2" in first.findings[0].message
    result = check(path, repair=True)
    assert result.exit_status == 0, findings(result)
    assert_resolved(path, h2, result)
    assert read_disk(path) == model.full()


def test_tie_with_two_logs_to_replay_is_left_alone(image: tuple[Path, WriteModel]) -> None:
    # Each header names its own complete log sequence: whichever is dropped loses committed
    # metadata, so the repair refuses to choose.
    path, _model = image
    g1, g2 = uuid.uuid4(), uuid.uuid4()
    log_entry_setting_block(path, 20, 0x77, 0, g1)
    log_entry_setting_block(path, 21, 0x78, 64 * 1024, g2)
    tie(path, {"log_guid": g1}, {"log_guid": g2})
    with unchanged(path):
        result = check(path, repair=True)
    assert result.exit_status == 2 and result.repairs == [], findings(result)
    assert "no safe choice" in result.findings[0].message


def test_identical_headers_with_equal_numbers_are_not_rewritten(image: tuple[Path, WriteModel]) -> None:
    # Disk2VHD writes two identical headers with one sequence number: accepted (a warning), and a
    # repair has nothing to do (VHDX-FORMAT.md 5.2 step 3).
    path, _model = image
    h = read_layout_headers(path).current
    write_header(path, 1, h)
    write_header(path, 2, h)
    with unchanged(path):
        result = check(path, repair=True)
    assert result.exit_status == 0 and result.repairs == []
    assert ("headers", "warning") in {(f.structure, f.severity) for f in result.findings}


def test_tie_repair_interrupted_between_the_two_slots(image: tuple[Path, WriteModel],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A power cut after the first slot is written and flushed: that slot now carries the larger
    # sequence number, so the file opens with the chosen header, and the tie is gone.
    from vhdx.engine.source import FileSource

    path, model = image
    h1, _h2 = tie(path, {"data_write_guid": uuid.uuid4()}, {"data_write_guid": uuid.uuid4()})
    real = FileSource.pwrite
    calls: list[int] = []

    class Crash(Exception):
        pass

    def pwrite(self: FileSource, offset: int, data: object) -> object:
        if offset in HEADER_SLOTS:
            calls.append(offset)
            if len(calls) == 2:
                raise Crash
        return real(self, offset, data)  # type: ignore[arg-type]

    with monkeypatch.context() as m:
        m.setattr(FileSource, "pwrite", pwrite)
        with pytest.raises(Crash):
            check(path, repair=True)
    assert calls[0] == HEADER_SLOTS[1]  # the slot not chosen is overwritten first
    with vhdx.open(path) as disk:
        assert disk.info().data_write_guid == str(h1.data_write_guid)
        assert disk.read() == model.full()
    assert check(path).exit_status == 0
