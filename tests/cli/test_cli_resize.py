"""``vhdx resize``: absolute and relative sizes, --json, --force, -q, and one-line errors.

Oracles: the virtual size and content read back through the library (content written before the
command, hashed), the JSON document's fields against those, and ``qemu-io``-free checks only (the
library's behaviour is covered by tests/integration/test_ops_resize.py).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from helpers import file_digest

import vhdx

MiB, GiB = 1 << 20, 1 << 30


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.vhdx"
    with vhdx.create(path, 64 * MiB, block_size=MiB) as d:
        d.pwrite(0, b"head" * 1000)
        d.pwrite(40 * MiB + 3, b"data past 32M")
    return path


def size_of(path: Path) -> int:
    with vhdx.open(path) as d:
        return d.size


def digest(path: Path, length: int) -> str:
    with vhdx.open(path) as d:
        return hashlib.sha256(d.pread(0, length)).hexdigest()


def one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("vhdx: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_grow_absolute_prints_a_summary(invoke: Callable[..., Result], image: Path) -> None:
    before = digest(image, 64 * MiB)
    result = invoke("resize", image, "10G")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"Grew '{image}' (dynamic) from 64 MiB to 10 GiB")
    assert result.stdout.count("\n") == 1
    assert size_of(image) == 10 * GiB
    assert digest(image, 64 * MiB) == before


def test_json_document(invoke: Callable[..., Result], image: Path) -> None:
    result = invoke("resize", "--json", image, "200G")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["image"] == str(image) and doc["disk-type"] == "dynamic"
    assert (doc["old-size"], doc["new-size"]) == (64 * MiB, 200 * GiB)
    assert doc["bat-relocated"] is True and doc["bat-offset-after"] != doc["bat-offset-before"]
    assert doc["file-size-after"] == image.stat().st_size
    for key in ("blocks-allocated", "blocks-freed", "bytes-written", "file-size-before", "seconds",
                "bat-length-before", "bat-length-after"):
        assert key in doc
    assert size_of(image) == 200 * GiB


@pytest.mark.parametrize("args,expected", [
    (("+10M",), 74 * MiB),
    (("--", "-16M"), 48 * MiB),
    (("-16M",), 48 * MiB),  # no "--" needed: a negative size is not taken for an option
    (("+0",), 64 * MiB),
])
def test_relative_sizes(invoke: Callable[..., Result], image: Path, args: tuple[str, ...], expected: int) -> None:
    before = digest(image, 48 * MiB)
    result = invoke("resize", "-q", image, *args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert size_of(image) == expected
    assert digest(image, 48 * MiB) == before


def test_same_size_says_nothing_changed(invoke: Callable[..., Result], image: Path) -> None:
    before = file_digest(image)
    result = invoke("resize", image, "64M")
    assert result.exit_code == 0 and "nothing changed" in result.stdout
    assert file_digest(image) == before


def test_shrink_past_data_needs_force(invoke: Callable[..., Result], image: Path) -> None:
    before = file_digest(image)
    one_line_error(invoke("resize", image, "32M"), "refusing to shrink", f"0x{40 * MiB + 3:x}")
    assert file_digest(image) == before
    prefix = digest(image, 32 * MiB)
    result = invoke("resize", "--force", "--json", image, "32M")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["new-size"] == 32 * MiB and doc["blocks-freed"] == 1
    assert size_of(image) == 32 * MiB and digest(image, 32 * MiB) == prefix


@pytest.mark.parametrize("size,fragments", [
    ("1000", ("not a multiple of the 512-byte logical sector size", "512 or 1024")),
    ("0", ("must be positive",)),
    ("65T", ("64 TiB",)),
    ("-1G", ("negative",)),
    ("12Q", ("invalid SIZE", "not a size")),
    ("--bogus", ("no such option: --bogus",)),
])
def test_bad_sizes_are_one_line_errors(invoke: Callable[..., Result], image: Path, size: str,
                                       fragments: tuple[str, ...]) -> None:
    before = file_digest(image)
    one_line_error(invoke("resize", image, size), *fragments)
    assert file_digest(image) == before


def test_differencing_image_is_refused(invoke: Callable[..., Result], tmp_path: Path) -> None:
    parent = tmp_path / "parent.vhdx"
    child = tmp_path / "child.avhdx"
    vhdx.create(parent, 8 * MiB).close()
    vhdx.create(child, parent=parent).close()
    before = file_digest(child)
    one_line_error(invoke("resize", child, "16M"), "differencing", "parent")
    one_line_error(invoke("resize", child, "+1M"), "differencing")
    assert file_digest(child) == before


def test_missing_file_and_not_a_vhdx(invoke: Callable[..., Result], tmp_path: Path) -> None:
    one_line_error(invoke("resize", tmp_path / "nope.vhdx", "1G"), "No such file")
    junk = tmp_path / "junk.vhdx"
    junk.write_bytes(b"x" * 4096)
    one_line_error(invoke("resize", junk, "1G"), "not a VHDX")


def test_help_has_examples_and_the_parent_warning(invoke: Callable[..., Result]) -> None:
    result = invoke("resize", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "vhdx resize disk.vhdx +10G" in text and "--force" in text and "--json" in text
    assert "DataWriteGuid" in text and "children" in text


def test_command_line_entry_point(image: Path) -> None:
    """The installed ``vhdx`` entry point, as a shell runs it (negative relative size included)."""
    run = subprocess.run([sys.executable, "-m", "vhdx_cli.main", "resize", str(image), "-8M"], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    assert size_of(image) == 56 * MiB
