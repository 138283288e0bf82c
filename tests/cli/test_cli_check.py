"""``vhdx check``: exit statuses as qemu-img check (0 clean, 2 corruptions, 3 leaks only, 1 the
check could not complete), the text and ``--json`` reports, ``--repair``, and that the image is
never written without ``--repair``.

Oracles: the one change made to each image (tests/craft.py), qemu-img check's own JSON output for
the field names and values, and the file's digest for "untouched".
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from craft import read_bytes, read_layout, rewrite_headers, set_bat_entry, unchanged, write_log_entries
from helpers import require_tool, run

import vhdx
from vhdx.constants import BAT_ENTRY_SIZE, LOG_SECTOR_SIZE, PayloadBlockState
from vhdx.model.log import DataWrite, build_entry

MiB = 1 << 20
QEMU_KEYS = ("filename", "format", "check-errors", "corruptions", "leaks", "corruptions-fixed", "leaks-fixed",
             "image-end-offset", "total-clusters", "allocated-clusters", "fragmented-clusters")


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.vhdx"
    with vhdx.create(path, 64 * MiB, block_size=MiB) as disk:
        disk.pwrite(0, b"\x11" * (2 * MiB))
    return path


def past_eof(path: Path, block: int = 20) -> int:
    """Point payload block ``block`` past the end of the file; return its BAT entry's offset."""
    layout = read_layout(path)
    at = layout.payload_entry_offset(block)
    set_bat_entry(path, at, PayloadBlockState.FULLY_PRESENT, 200 * MiB)
    return at


def as_json(result: Result) -> dict[str, object]:
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_clean_image(invoke: Callable[..., Result], image: Path) -> None:
    with unchanged(image):
        result = invoke("check", image)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "No errors were found on the image." in result.stdout
    assert "info:" not in result.stdout  # remarks only with --verbose


def test_corruption_exit_2_and_file_untouched(invoke: Callable[..., Result], image: Path) -> None:
    at = past_eof(image)
    with unchanged(image):
        result = invoke("check", image)
    assert result.exit_code == 2
    assert f"corruption: BAT at 0x{at:x}: payload block 20 lies at 0xc800000, past the end of the file" in result.stdout
    assert "1 errors were found on the image." in result.stdout


def test_leak_exit_3(invoke: Callable[..., Result], image: Path) -> None:
    with open(image, "ab") as f:
        f.write(b"\x5a" * 4096)
    with unchanged(image):
        result = invoke("check", image)
    assert result.exit_code == 3
    assert "1 leaked clusters were found on the image." in result.stdout


def test_not_a_vhdx_exit_1(invoke: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "noise.bin"
    path.write_bytes(os.urandom(MiB))
    result = invoke("check", "--json", path)
    assert result.exit_code == 1
    doc = as_json(result)
    assert doc["check-errors"] == 1 and doc["errors"]


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_path_is_one_line_exit_1(invoke: Callable[..., Result], tmp_path: Path, kind: str) -> None:
    path = tmp_path / "nothing.vhdx" if kind == "missing" else tmp_path
    result = invoke("check", path)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhdx: ") and "Traceback" not in result.stderr


def test_json_document(invoke: Callable[..., Result], image: Path) -> None:
    at = past_eof(image)
    result = invoke("check", "--json", image)
    assert result.exit_code == 2
    doc = as_json(result)
    for key in QEMU_KEYS + ("findings",):
        assert key in doc, key
    assert doc["filename"] == str(image) and doc["format"] == "vhdx"
    assert doc["corruptions"] == 1 and doc["leaks"] == 0 and doc["check-errors"] == 0
    assert doc["corruptions-fixed"] == doc["leaks-fixed"] == 0
    assert doc["total-clusters"] == 64 and doc["allocated-clusters"] == 3
    [bad] = [f for f in doc["findings"] if f["severity"] == "corruption"]  # type: ignore[union-attr]
    assert bad["structure"] == "BAT" and bad["file-offset"] == at and "past the end of the file" in bad["message"]
    assert all(set(f) >= {"structure", "file-offset", "severity", "message"} for f in doc["findings"])  # type: ignore[union-attr]


def test_repair(invoke: Callable[..., Result], image: Path) -> None:
    past_eof(image)
    result = invoke("check", "--repair", "--json", image)
    assert result.exit_code == 0, result.stdout
    doc = as_json(result)
    assert doc["corruptions"] == 0 and doc["corruptions-fixed"] == 1
    [action] = doc["repairs"]  # type: ignore[misc]
    assert action["action"] == "detach-blocks"
    assert action["virtual-ranges"] == [{"virtual-offset": 20 * MiB, "length": MiB}]
    # Afterwards the plain check is clean and says so in qemu's words.
    again = invoke("check", image)
    assert again.exit_code == 0 and "No errors were found on the image." in again.stdout


def test_repair_text_report(invoke: Callable[..., Result], image: Path) -> None:
    past_eof(image)
    result = invoke("check", "-r", image)
    assert result.exit_code == 0
    assert "[fixed]" in result.stdout
    assert "The following inconsistencies were found and repaired:" in result.stdout
    assert "    1 corruptions" in result.stdout
    assert "virtual range 0x1400000+0x100000 changed" in result.stdout


def test_repair_replays_a_pending_log(invoke: Callable[..., Result], image: Path) -> None:
    # A log entry (not applied) that points block 30 at a new block of 0x77 at the end of the file.
    layout = read_layout(image)
    new_block = layout.file_size
    with open(image, "ab") as f:
        f.write(b"\x77" * MiB)
    at = layout.payload_entry_offset(30)
    sector_at = at - at % LOG_SECTOR_SIZE
    sector = bytearray(read_bytes(image, sector_at, LOG_SECTOR_SIZE))
    sector[at - sector_at : at - sector_at + BAT_ENTRY_SIZE] = (new_block | PayloadBlockState.FULLY_PRESENT).to_bytes(
        BAT_ENTRY_SIZE, "little")
    guid = uuid.uuid4()
    raw = build_entry(log_guid=guid, sequence_number=1, tail=0, flushed_file_offset=new_block + MiB,
                      last_file_offset=new_block + MiB, writes=[DataWrite(sector_at, bytes(sector))])
    write_log_entries(image, [(0, raw)], guid)
    with unchanged(image):
        assert invoke("check", image).exit_code == 2
    result = invoke("check", "--repair", "--json", image)
    assert result.exit_code == 0
    assert as_json(result)["corruptions-fixed"] == 1
    with vhdx.open(image) as disk:
        assert not disk.has_pending_log
        assert disk.pread(30 * MiB, MiB) == b"\x77" * MiB


def test_verbose_lists_remarks(invoke: Callable[..., Result], image: Path) -> None:
    with open(image, "ab") as f:
        f.write(bytes(MiB))  # free space at the end: an info remark, not a leak
    quiet = invoke("check", image)
    loud = invoke("check", "-v", image)
    assert quiet.exit_code == loud.exit_code == 0
    assert "free space at the end of the file" not in quiet.stdout
    assert "info: file at " in loud.stdout and "free space at the end of the file" in loud.stdout


def test_differencing_parent_options(invoke: Callable[..., Result], image: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    child = elsewhere / "child.vhdx"
    with vhdx.create(child, parent=image, block_size=MiB) as disk:
        disk.pwrite(512, b"\x22" * 512)
    base = tmp_path / "base"
    base.mkdir()
    shutil.move(str(image), base / image.name)  # the locator's paths no longer lead to it
    missing = invoke("check", "--json", child)
    assert missing.exit_code == 0
    assert any(f["structure"] == "parent locator" and f["severity"] == "warning"
               for f in as_json(missing)["findings"])  # type: ignore[union-attr]
    assert "backing-image" not in as_json(missing)
    for option in (["--parent-search", str(base)], ["--parent", str(base / image.name)]):
        found = invoke("check", "--json", *option, child)
        assert found.exit_code == 0, found.stdout
        doc = as_json(found)
        assert doc["backing-image"]["filename"] == str(base / image.name)  # type: ignore[index]
        assert doc["backing-image"]["corruptions"] == 0  # type: ignore[index]
    # A parent that changed after the child was made: a corruption unless accepted.
    rewrite_headers(base / image.name, data_write_guid=uuid.uuid4())
    assert invoke("check", "--parent-search", base, child).exit_code == 2
    assert invoke("check", "--parent-search", base, "--ignore-id-mismatch", child).exit_code == 0


@pytest.mark.interop
def test_json_matches_qemu_img_check(invoke: Callable[..., Result], image: Path) -> None:
    require_tool("qemu-img")
    past_eof(image, 20)
    past_eof(image, 21)
    proc = run("qemu-img", "check", "--output=json", str(image), check=False)
    theirs = json.loads(proc.stdout)
    result = invoke("check", "--json", image)
    ours = as_json(result)
    assert proc.returncode == result.exit_code == 2
    for key, value in theirs.items():  # every field qemu prints, with the same value
        assert ours[key] == value, key
    assert set(ours) >= set(theirs)
