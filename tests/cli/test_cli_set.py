"""``vhdx set`` and ``vhdx set-parent``: text, --json, -q, usage errors, one-line failures.

Oracles: the library's read of the image afterwards (info, sha256 taken before), the file's own
digest for "untouched", and the exit statuses documented in vhdx_cli.main.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from click.testing import Result
from helpers import file_digest

import vhdx

MiB = 1 << 20


def _digest(path: Path) -> str:
    with vhdx.open(path) as d:
        return hashlib.sha256(d.read()).hexdigest()


def _info(path: Path, **kw: object) -> vhdx.DiskInfo:
    with vhdx.open(path, **kw) as d:  # type: ignore[arg-type]
        return d.info()


def _chain(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    base, child = folder / "base.vhdx", folder / "child.avhdx"
    with vhdx.create(base, 8 * MiB, block_size=MiB) as d:
        d.pwrite(0, b"\x33" * (2 * MiB))
    with vhdx.create(child, parent=base) as d:
        d.pwrite(MiB, b"\x44" * 4096)
    return base, child


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhdx: ") and "Traceback" not in result.stderr
    return lines[0]


# --- set-parent ------------------------------------------------------------------------------------


def test_set_parent_after_a_move(invoke: Callable[..., Result], tmp_path: Path) -> None:
    base, child = _chain(tmp_path / "old")
    digest = _digest(child)
    guid = _info(child).data_write_guid
    (tmp_path / "new").mkdir()
    new_base = tmp_path / "new" / "golden.vhdx"
    new_child = tmp_path / "new" / "child.avhdx"
    shutil.move(base, new_base)
    shutil.move(child, new_child)
    assert invoke("chain", new_child).exit_code == 2  # the parent is not where the locator says
    result = invoke("set-parent", new_child, new_base)
    assert result.exit_code == 0, result.stderr
    assert "golden.vhdx" in result.stdout and "relative_path .\\golden.vhdx" in result.stdout
    assert _digest(new_child) == digest
    assert _info(new_child).data_write_guid == guid
    # Again: nothing to do, said so.
    before = file_digest(new_child)
    again = invoke("set-parent", new_child, new_base)
    assert again.exit_code == 0 and "nothing changed" in again.stdout
    assert file_digest(new_child) == before


def test_set_parent_json_and_quiet(invoke: Callable[..., Result], tmp_path: Path) -> None:
    base, child = _chain(tmp_path)
    (tmp_path / "sub").mkdir()
    moved = tmp_path / "sub" / "base.vhdx"
    shutil.move(base, moved)
    result = invoke("set-parent", "--json", child, moved)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["changed"] is True and doc["linkage-matched"] is True
    assert doc["locator-after"]["relative_path"] == ".\\sub\\base.vhdx"  # the format's key names, as stored
    assert doc["locator-before"]["relative_path"] == ".\\base.vhdx"
    assert doc["child-data-write-guid"] == _info(child).data_write_guid
    assert {"file-size-before", "file-size-after", "seconds"} <= set(doc)
    shutil.move(moved, base)
    quiet = invoke("set-parent", "-q", child, base)
    assert quiet.exit_code == 0 and quiet.stdout == ""
    assert _info(child).parent_link_ok


def test_set_parent_mismatch_and_override(invoke: Callable[..., Result], tmp_path: Path) -> None:
    _base, child = _chain(tmp_path)
    other = tmp_path / "other.vhdx"
    with vhdx.create(other, 8 * MiB, block_size=MiB) as d:
        d.pwrite(0, b"\x99" * MiB)
    before = file_digest(child)
    line = _one_line_error(invoke("set-parent", child, other))
    assert "DataWriteGuid" in line and "ignore_id_mismatch" in line
    assert file_digest(child) == before
    result = invoke("set-parent", child, other, "--ignore-id-mismatch")
    assert result.exit_code == 0, result.stderr
    assert "mismatch ignored" in result.stdout
    info = _info(child)
    assert info.parent_link_ok and info.parent_linkage == "{" + _info(other).data_write_guid + "}"


def test_set_parent_refusals(invoke: Callable[..., Result], tmp_path: Path) -> None:
    base, child = _chain(tmp_path)
    before = file_digest(child)
    assert "own parent" in _one_line_error(invoke("set-parent", child, child))
    assert "would loop" in _one_line_error(invoke("set-parent", base, child))  # base is child's parent
    lone = tmp_path / "lone.vhdx"
    vhdx.create(lone, 8 * MiB).close()
    assert "not a differencing disk" in _one_line_error(invoke("set-parent", lone, base))
    _one_line_error(invoke("set-parent", child, tmp_path / "missing.vhdx"))
    (tmp_path / "dir.vhdx").mkdir()
    _one_line_error(invoke("set-parent", child, tmp_path / "dir.vhdx"))
    assert file_digest(child) == before
    usage = invoke("set-parent", child)
    assert usage.exit_code == 2


def test_set_parent_help_has_examples(invoke: Callable[..., Result]) -> None:
    result = invoke("set-parent", "--help")
    assert result.exit_code == 0
    assert "Examples:" in result.stdout and "vhdx set-parent" in result.stdout and "--ignore-id-mismatch" in result.stdout


# --- set ---------------------------------------------------------------------------------------------


def test_set_reset_disk_id_text_json_quiet(invoke: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "a.vhdx"
    with vhdx.create(path, 8 * MiB, block_size=MiB) as d:
        d.pwrite(0, b"\x12" * MiB)
    digest, old = _digest(path), _info(path)
    result = invoke("set", path, "--reset-disk-id")
    assert result.exit_code == 0, result.stderr
    new_id = _info(path).disk_id
    assert new_id != old.disk_id and f"disk id {old.disk_id} -> {new_id}" in result.stdout
    wanted = uuid.uuid4()
    doc = json.loads(invoke("set", "--json", path, "--disk-id", "{" + str(wanted).upper() + "}",
                            "--physical-sector-size", "512").stdout)
    assert doc["disk-id-before"] == new_id and doc["disk-id-after"] == str(wanted)
    assert doc["physical-sector-size-before"] == 4096 and doc["physical-sector-size-after"] == 512
    assert doc["data-write-guid"] == old.data_write_guid and doc["changed"] is True
    info = _info(path)
    assert info.disk_id == str(wanted) and info.physical_sector_size == 512
    assert info.data_write_guid == old.data_write_guid
    quiet = invoke("set", "-q", path, "--physical-sector-size", "4096")
    assert quiet.exit_code == 0 and quiet.stdout == ""
    assert _info(path).physical_sector_size == 4096
    same = invoke("set", path, "--physical-sector-size", "4096")
    assert same.exit_code == 0 and "nothing changed" in same.stdout
    assert _digest(path) == digest
    # The new id shows in `vhdx info` too.
    assert str(wanted) in invoke("info", path).stdout


def test_set_usage_and_errors(invoke: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "a.vhdx"
    vhdx.create(path, 8 * MiB).close()
    before = file_digest(path)
    assert invoke("set", path).exit_code == 2  # nothing asked
    assert invoke("set", path, "--reset-disk-id", "--disk-id", str(uuid.uuid4())).exit_code == 2
    assert invoke("set", path, "--disk-id", "not-a-guid").exit_code == 2
    assert invoke("set", path, "--physical-sector-size", "1024").exit_code == 2
    assert file_digest(path) == before
    junk = tmp_path / "junk.vhdx"
    junk.write_bytes(b"\0" * 2 * MiB)
    assert "vhdxfile" in _one_line_error(invoke("set", junk, "--reset-disk-id"))
    _one_line_error(invoke("set", tmp_path / "missing.vhdx", "--reset-disk-id"))
    help_text = invoke("set", "--help").stdout
    assert "Examples:" in help_text and "DataWriteGuid" in help_text and "parent_linkage" in help_text


def test_set_on_a_child_with_parent_search(invoke: Callable[..., Result], tmp_path: Path) -> None:
    base, child = _chain(tmp_path / "chain")
    (tmp_path / "elsewhere").mkdir()
    shutil.move(base, tmp_path / "elsewhere" / "base.vhdx")
    _one_line_error(invoke("set", child, "--physical-sector-size", "512"))  # its parent is needed
    result = invoke("set", child, "--physical-sector-size", "512", "--parent-search", tmp_path / "elsewhere")
    assert result.exit_code == 0, result.stderr
    assert _info(child, parent_search=[tmp_path / "elsewhere"]).physical_sector_size == 512
