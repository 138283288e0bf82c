"""``vhdx merge``: the summary, --json, --into, --keep, --force and --search, the refusal when
other children would be orphaned (one stderr line, exit 1, nothing changed), progress, --help.

Oracles: the chain's content read before the merge, the files on disk, file digests for
"untouched", the documented exit statuses (vhdx_cli.main).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import Result
from craft import unchanged
from merge_support import MiB, content, data_write_guid, make_chain

import vhdx

Invoke = Callable[..., Result]


def _one_error_line(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhdx: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_merge_prints_what_it_did(tmp_path: Path, invoke: Invoke) -> None:
    base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="cli")
    before = content(child)
    result = invoke("merge", child)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Merged '{child}' into '{base}'") and "copied" in lines[0]
    assert lines[1] == f"Removed: {child}"
    assert not child.exists() and content(base) == before
    assert result.stderr == ""


def test_merge_json_into_grandparent_with_keep(tmp_path: Path, invoke: Invoke) -> None:
    base, mid, top = make_chain(tmp_path, ["base.vhdx", "mid.avhdx", "top.avhdx"], sector=4096, seed="cli-json")
    before = content(top)
    result = invoke("merge", top, "--into", base, "--keep", "--json", "--no-progress")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["kept"] is True and doc["removed"] == []
    assert [Path(p).name for p in doc["merged"]] == ["top.avhdx", "mid.avhdx"]
    assert doc["data-write-guid"] == data_write_guid(base)
    assert doc["bytes-written"] == doc["bytes-read"] > 0
    assert doc["file-size-after"] == base.stat().st_size
    for key in ("blocks-allocated", "blocks-freed", "file-size-before", "seconds", "resumed", "orphaned"):
        assert key in doc
    assert top.exists() and mid.exists() and content(base) == before


def test_keep_says_the_images_are_no_longer_valid_alone(tmp_path: Path, invoke: Invoke) -> None:
    _base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="cli-keep", ops=4)
    result = invoke("merge", child, "--keep")
    assert result.exit_code == 0, result.stderr
    assert "not valid as separate disks" in result.stdout and child.exists()


def test_other_children_refuse_the_merge_unless_forced(tmp_path: Path, invoke: Invoke) -> None:
    base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="cli-sib", ops=6)
    sibling = tmp_path / "sibling.avhdx"
    vhdx.create(sibling, parent=base, block_size=MiB).close()
    with unchanged(base, child, sibling):
        line = _one_error_line(invoke("merge", child))
    assert "sibling.avhdx" in line and "orphaned" in line and "force" in line
    before = content(child)
    result = invoke("merge", child, "--force")
    assert result.exit_code == 0, result.stderr
    assert "warning" in result.stderr and "sibling.avhdx" in result.stderr
    assert content(base) == before


def test_search_folders_are_looked_in(tmp_path: Path, invoke: Invoke) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    base, child = make_chain(here, ["base.vhdx", "child.avhdx"], seed="cli-search", ops=4)
    vhdx.create(there / "far.avhdx", parent=base, block_size=MiB).close()
    with unchanged(base, child):
        line = _one_error_line(invoke("merge", child, "--search", there))
    assert "far.avhdx" in line


def test_bad_requests_are_one_line_errors(tmp_path: Path, invoke: Invoke) -> None:
    base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="cli-bad", ops=3)
    other = tmp_path / "other.vhdx"
    vhdx.create(other, MiB).close()
    with unchanged(base, child, other):
        assert "not a differencing disk" in _one_error_line(invoke("merge", base))
        assert "not in the chain" in _one_error_line(invoke("merge", child, "--into", other))
        assert "No such file" in _one_error_line(invoke("merge", tmp_path / "missing.avhdx"))


def test_quiet_and_progress(tmp_path: Path, invoke: Invoke) -> None:
    _base, child = make_chain(tmp_path, ["base.vhdx", "child.avhdx"], seed="cli-q", ops=6)
    result = invoke("merge", child, "-q", "--progress")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "merging:" in result.stderr and "100.0%" in result.stderr


def test_help_has_examples_and_explains_the_risks(invoke: Invoke) -> None:
    result = invoke("merge", "--help")
    assert result.exit_code == 0
    for text in ("Examples:", "--into", "--keep", "--force", "--search", "crash-safe", "vhdx convert"):
        assert text in result.stdout
    assert "merge" in invoke("--help").stdout
