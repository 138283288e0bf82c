"""``vhdx compact``: text, --json and -q output, --no-zero-scan, fixed images refused (and
converted with --convert), differencing images with the parent options, errors as one line.

Oracles: the image's content digest taken before (through the library), the file's size and
digest, the JSON document against the file sizes, the documented exit statuses (vhdx_cli.main).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from helpers import file_digest

import vhdx

MiB = 1 << 20


def content(path: Path, **kwargs: object) -> str:
    with vhdx.open(path, **kwargs) as disk:  # type: ignore[arg-type]
        return hashlib.sha256(disk.read()).hexdigest()


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    """Data blocks, allocated all-zero blocks and a trimmed block, scattered."""
    rng = np.random.default_rng(21)
    path = tmp_path / "disk.vhdx"
    with vhdx.create(path, 16 * MiB, block_size=MiB) as disk:
        for b in (5, 0, 9, 2, 12, 7, 15, 3):
            disk.pwrite(b * MiB, bytes(MiB) if b in (9, 2) else rng.bytes(MiB))
        disk.discard(12 * MiB, MiB)
    return path


def test_text(invoke: Callable[..., Result], image: Path) -> None:
    before, size = content(image), os.path.getsize(image)
    r = invoke("compact", image)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"Compacted '{image}': 2 blocks freed, ")
    assert "reclaimed" in r.stdout and r.stderr == ""
    assert content(image) == before
    assert os.path.getsize(image) < size


def test_json(invoke: Callable[..., Result], image: Path) -> None:
    size = os.path.getsize(image)
    r = invoke("compact", "--json", image)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["file-size-before"] == size
    assert doc["file-size-after"] == os.path.getsize(image)
    assert doc["bytes-reclaimed"] == size - os.path.getsize(image) > 0
    assert doc["blocks-freed"] == 2 and doc["blocks-moved"] > 0
    assert doc["disk-type"] == "dynamic" and doc["converted"] is False
    assert {"bytes-read", "bytes-written", "seconds"} <= set(doc)


def test_quiet_and_second_run(invoke: Callable[..., Result], image: Path) -> None:
    r = invoke("compact", "-q", image)
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
    digest = file_digest(image)
    r = invoke("compact", "--json", image)
    assert json.loads(r.stdout)["bytes-reclaimed"] == 0
    assert file_digest(image) == digest  # nothing to do: not a byte changed


def test_no_zero_scan(invoke: Callable[..., Result], image: Path) -> None:
    r = invoke("compact", "--json", "--no-zero-scan", image)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["blocks-freed"] == 0  # the zero blocks were not looked at
    r = invoke("compact", "--json", image)
    assert json.loads(r.stdout)["blocks-freed"] == 2


def test_progress(invoke: Callable[..., Result], image: Path) -> None:
    r = invoke("compact", "--progress", "-q", image)
    assert r.exit_code == 0
    assert "compacting:" in r.stderr


def test_fixed_refused_then_converted(invoke: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "fixed.vhdx"
    with vhdx.create(path, 8 * MiB, disk_type="fixed", block_size=MiB) as disk:
        disk.pwrite(MiB, b"z" * 4096)
    digest, before = file_digest(path), content(path)
    r = invoke("compact", path)
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vhdx: ")
    assert "vhdx convert --type dynamic" in r.stderr and "Traceback" not in r.stderr
    assert file_digest(path) == digest
    r = invoke("compact", "--convert", "--json", path)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["converted"] is True and doc["disk-type"] == "dynamic"
    assert content(path) == before
    with vhdx.open(path) as disk:
        assert disk.disk_type == "dynamic"


def test_differencing_with_parent_search(invoke: Callable[..., Result], tmp_path: Path) -> None:
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    parent = base_dir / "parent.vhdx"
    rng = np.random.default_rng(3)
    with vhdx.create(parent, 8 * MiB, block_size=MiB) as p:
        p.pwrite(0, rng.bytes(8 * MiB))
    child = tmp_path / "child.avhdx"
    with vhdx.create(child, parent=parent) as c:
        c.pwrite(2 * MiB, bytes(2 * MiB))  # zeros hiding the parent: released as ZERO blocks
        c.pwrite(6 * MiB, rng.bytes(MiB))
    before = content(child)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    parent.rename(moved / "parent.vhdx")
    r = invoke("compact", child)
    assert r.exit_code == 1 and "parent" in r.stderr and r.stderr.count("\n") == 1
    r = invoke("compact", "--json", "--parent-search", moved, child)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["disk-type"] == "differencing"
    assert content(child, parent_search=[moved]) == before


def test_missing_and_not_vhdx(invoke: Callable[..., Result], tmp_path: Path) -> None:
    r = invoke("compact", tmp_path / "nope.vhdx")
    assert r.exit_code == 1 and r.stderr.startswith("vhdx: ") and r.stderr.count("\n") == 1
    junk = tmp_path / "junk.vhdx"
    junk.write_bytes(b"not an image" * 1000)
    r = invoke("compact", junk)
    assert r.exit_code == 1 and "vhdxfile" in r.stderr and r.stderr.count("\n") == 1
    assert junk.read_bytes() == b"not an image" * 1000
    r = invoke("compact", tmp_path)
    assert r.exit_code == 1 and r.stderr.count("\n") == 1


def test_help(invoke: Callable[..., Result]) -> None:
    r = invoke("compact", "--help")
    assert r.exit_code == 0
    assert "Examples:" in r.stdout and "vhdx compact disk.vhdx" in r.stdout
    assert "--no-zero-scan" in r.stdout and "--convert" in r.stdout
