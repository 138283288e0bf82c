"""``vhdx checkpoint create|list|revert|delete``: the group and its subcommands, text and --json
output, refusals as one stderr line with exit 1, --help of each.

Oracles: the content of the active disk read before each step, the files on disk, file digests
for "untouched", the documented exit statuses (vhdx_cli.main).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path

from click.testing import Result
from craft import unchanged
from merge_support import content, make_chain, scribble

import vhdx

Invoke = Callable[..., Result]
AVHDX = re.compile(r"^(.+)_[0-9A-F]{8}(-[0-9A-F]{4}){3}-[0-9A-F]{12}\.avhdx$")


def _create(invoke: Invoke, image: Path, *args: str) -> Path:
    result = invoke("checkpoint", "create", image, *args)
    assert result.exit_code == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.exists() and AVHDX.match(path.name)
    return path


def _scribble(path: Path, seed: str) -> None:
    with vhdx.open(path, "r+b") as d:
        scribble(d, random.Random(seed), 8)


def test_create_list_revert_delete(tmp_path: Path, invoke: Invoke) -> None:
    (base,) = make_chain(tmp_path, ["Server.vhdx"], seed="cli-cp")
    first = _create(invoke, base)
    assert AVHDX.match(first.name).group(1) == "Server"
    _scribble(first, "1")
    second = _create(invoke, base, "--name", "nightly")
    assert second.name.startswith("nightly_")
    _scribble(second, "2")

    listing = invoke("checkpoint", "list", first)
    assert listing.exit_code == 0, listing.stderr
    rows = listing.stdout.splitlines()
    assert rows[0].split()[:2] == ["#", "kind"]
    assert [r.split()[1] for r in rows[1:]] == ["base", "checkpoint", "checkpoint"]
    assert rows[-1].endswith(f"{second}  (active)") and "(active)" not in "".join(rows[1:-1])

    doc = json.loads(invoke("checkpoint", "list", "--json", base).stdout)
    assert [Path(d["path"]).name for d in doc["disks"]] == [base.name, first.name, second.name]
    assert [d["active"] for d in doc["disks"]] == [False, False, True]
    assert doc["disks"][1]["file-size"] == first.stat().st_size and "modified" in doc["disks"][1]
    assert Path(doc["active"]) == second and doc["leftovers"] == []

    at_first = content(first)
    result = invoke("checkpoint", "revert", base)
    assert result.exit_code == 0, result.stderr
    assert f"Discarded '{second}'" in result.stdout and not second.exists()
    assert content(first) == at_first

    result = invoke("checkpoint", "delete", base, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert Path(doc["checkpoint"]) == first and Path(doc["active"]) == base
    assert doc["merge"]["bytes-written"] > 0 and Path(doc["merge"]["target"]) == base
    assert not first.exists() and content(base) == at_first


def test_delete_a_named_checkpoint_from_the_middle(tmp_path: Path, invoke: Invoke) -> None:
    base, c1, c2 = make_chain(tmp_path, ["disk.vhdx", "disk_1.avhdx", "disk_2.avhdx"], sector=4096, seed="cli-mid")
    active = content(c2)
    result = invoke("checkpoint", "delete", c2, c1.name)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Deleted checkpoint '{c1}'; active disk: {c2}")
    assert f"Re-pointed to '{base}': {c2}" in result.stdout
    assert not c1.exists() and content(c2) == active


def test_refusals_are_one_line(tmp_path: Path, invoke: Invoke) -> None:
    (base,) = make_chain(tmp_path, ["disk.vhdx"], seed="cli-refuse", ops=3)
    with unchanged(base):
        for args in (("revert", base), ("delete", base)):
            result = invoke("checkpoint", *args)
            assert result.exit_code == 1 and "no checkpoint" in result.stderr
            assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("vhdx: ")
    c1 = _create(invoke, base)
    with unchanged(base, c1):
        result = invoke("checkpoint", "delete", c1, base.name)
        assert result.exit_code == 1 and "base disk" in result.stderr
        result = invoke("checkpoint", "create", base, "--name", "a/b")
        assert result.exit_code == 1 and "plain file name" in result.stderr
    vhdx.create(tmp_path / "disk_other.avhdx", parent=c1).close()
    vhdx.create(tmp_path / "disk_other2.avhdx", parent=c1).close()
    result = invoke("checkpoint", "list", base)
    assert result.exit_code == 1 and "not a linear checkpoint chain" in result.stderr


def test_help_of_the_group_and_each_subcommand(invoke: Invoke) -> None:
    top = invoke("checkpoint", "--help")
    assert top.exit_code == 0
    for sub in ("create", "list", "revert", "delete"):
        assert sub in top.stdout
        text = invoke("checkpoint", sub, "--help").stdout
        assert "Examples:" in text and "vhdx checkpoint " + sub in text
    assert "discarded" in invoke("checkpoint", "revert", "--help").stdout
    assert "re-points" in invoke("checkpoint", "delete", "--help").stdout
    assert "checkpoint" in invoke("--help").stdout
