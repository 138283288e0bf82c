"""``vhdx create`` and ``vhdx write``: sizes with suffixes, every invalid parameter reported as one
line with exit status 1 (2 for what click itself rejects: a malformed size, an unknown choice),
existing files never replaced without --force, and writes from a file or stdin at an offset.

Oracles: the documented exit statuses (vhdx_cli.main), the arithmetic of the size suffixes
(binary units), the bytes given to ``vhdx write`` (read back through the library), and the
file's own digest for "untouched".
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import file_digest
from rawvhdx import read_image

import vhdx
from vhdx_cli.main import cli

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


@pytest.fixture()
def run() -> Callable[..., Result]:
    """``vhdx ARGS...`` in-process, with optional bytes on stdin; exceptions escaping the command
    fail the test (a user would see a traceback)."""
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        runner = CliRunner()

    def invoke(*args: object, input: bytes | None = None) -> Result:
        return runner.invoke(cli, [str(a) for a in args], input=input, prog_name="vhdx", catch_exceptions=False)

    return invoke


def _one_line_error(result: Result, *, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    if code == 1:
        assert len(lines) == 1, lines
        assert lines[0].startswith("vhdx: ")
    return result.stderr


# --- create -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("10G", 10 * GiB), ("64T", 64 * TiB), ("1.5M", 3 * MiB // 2), ("512K", 512 * KiB), ("3145728", 3 * MiB),
     ("2GiB", 2 * GiB), ("100m", 100 * MiB)],
)
def test_create_accepts_sizes_with_suffixes(run, tmp_path: Path, text: str, size: int) -> None:
    path = tmp_path / "d.vhdx"
    result = run("create", path, text)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert f"size={size}" in result.stdout
    img = read_image(path)
    assert img.virtual_size == size
    assert (img.block_size, img.logical_sector_size, img.physical_sector_size) == (32 * MiB, 512, 4096)
    assert img.current.log_length == MiB
    with vhdx.open(path) as disk:
        assert disk.disk_type == "dynamic"


def test_create_options(run, tmp_path: Path) -> None:
    path = tmp_path / "f.vhdx"
    result = run("create", path, "20M", "--type", "fixed", "--block-size", "4M", "--logical-sector-size", "4096",
                 "--physical-sector-size", "512", "--log-size", "2M", "-q")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # --quiet
    img = read_image(path)
    assert (img.virtual_size, img.block_size, img.logical_sector_size, img.physical_sector_size) == (
        20 * MiB, 4 * MiB, 4096, 512)
    assert img.leave_block_allocated
    assert img.current.log_length == 2 * MiB


def test_create_differencing_takes_the_parents_size(run, tmp_path: Path) -> None:
    parent = tmp_path / "base.vhdx"
    assert run("create", parent, "3G", "--logical-sector-size", "4096", "-q").exit_code == 0
    result = run("create", tmp_path / "child.avhdx", "--parent", parent)
    assert result.exit_code == 0, result.stderr
    assert "type=differencing" in result.stdout
    child = read_image(tmp_path / "child.avhdx")
    assert (child.virtual_size, child.block_size, child.logical_sector_size) == (3 * GiB, 2 * MiB, 4096)
    assert child.has_parent and child.locator is not None
    assert child.locator["relative_path"] == ".\\base.vhdx"


INVALID_CREATE = [
    pytest.param(["0"], "size", id="size-zero"),
    pytest.param(["1000"], "logical sector size", id="size-not-sector-multiple"),
    pytest.param(["65T"], "64 TiB", id="size-over-64T"),
    pytest.param(["64T", "--logical-sector-size", "4096", "--block-size", "3M"], "block size", id="block-3M"),
    pytest.param(["1G", "--block-size", "512K"], "block size", id="block-512K"),
    pytest.param(["1G", "--block-size", "512M"], "block size", id="block-512M"),
    pytest.param(["1G", "--block-size", "0"], "block size", id="block-0"),
    pytest.param(["1G", "--log-size", "0"], "log size", id="log-0"),
    pytest.param(["1G", "--log-size", "1.5M"], "log size", id="log-1.5M"),
    pytest.param(["1G", "--log-size", "4G"], "log size", id="log-4G"),
    pytest.param(["1G", "--type", "differencing"], "parent", id="differencing-without-parent"),
    pytest.param([], "SIZE", id="no-size"),
]


@pytest.mark.parametrize(("args", "mentions"), INVALID_CREATE)
def test_create_invalid_is_one_line_exit_1(run, tmp_path: Path, args: list[str], mentions: str) -> None:
    path = tmp_path / "bad.vhdx"
    message = _one_line_error(run("create", path, *args))
    assert mentions.lower() in message.lower()
    assert list(tmp_path.iterdir()) == []  # nothing created, no temporary file left


def test_create_parent_with_other_type_is_one_line_exit_1(run, tmp_path: Path) -> None:
    parent = tmp_path / "base.vhdx"
    vhdx.create(parent, 8 * MiB).close()
    digest = file_digest(parent)
    for disk_type in ("fixed", "dynamic"):
        message = _one_line_error(run("create", tmp_path / "c.vhdx", "--parent", parent, "--type", disk_type))
        assert "differencing" in message
    message = _one_line_error(run("create", tmp_path / "c.vhdx", "16M", "--parent", parent))
    assert "parent" in message
    message = _one_line_error(run("create", tmp_path / "c.vhdx", "--parent", tmp_path / "missing.vhdx"))
    assert "missing.vhdx" in message
    # --force never turns the parent itself into its own child.
    message = _one_line_error(run("create", parent, "--parent", parent, "--force"))
    assert "parent" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.vhdx"]
    assert file_digest(parent) == digest


@pytest.mark.parametrize(
    "args",
    [["10X"], ["ten"], ["1G", "--logical-sector-size", "1024"], ["1G", "--physical-sector-size", "2048"],
     ["1G", "--block-size", "lots"], ["1G", "--type", "sparse"]],
    ids=["size-10X", "size-word", "logical-1024", "physical-2048", "block-word", "type-unknown"],
)
def test_create_malformed_arguments_are_usage_errors(run, tmp_path: Path, args: list[str]) -> None:
    """What click rejects while parsing is a usage error: exit 2, as documented in vhdx_cli.main."""
    result = run("create", tmp_path / "bad.vhdx", *args)
    _one_line_error(result, code=2)
    assert "Error:" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_create_never_replaces_an_existing_file_without_force(run, tmp_path: Path) -> None:
    path = tmp_path / "taken.vhdx"
    path.write_bytes(b"not yours\n" * 100)
    digest, mtime = file_digest(path), path.stat().st_mtime_ns
    message = _one_line_error(run("create", path, "1G"))
    assert "exists" in message and "--force" in message
    assert file_digest(path) == digest and path.stat().st_mtime_ns == mtime
    # --force with an invalid size still leaves it alone.
    _one_line_error(run("create", path, "1000", "--force"))
    assert file_digest(path) == digest
    result = run("create", path, "1G", "--force")
    assert result.exit_code == 0, result.stderr
    assert read_image(path).virtual_size == GiB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.vhdx"]


# --- write --------------------------------------------------------------------------------------------


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.vhdx"
    vhdx.create(path, 16 * MiB, block_size=MiB).close()
    return path


@pytest.mark.parametrize("offset_text, offset", [("0", 0), ("1M", MiB), ("12345", 12345), ("3.5M", 7 * MiB // 2)])
def test_write_a_file_at_an_offset(run, tmp_path: Path, image: Path, offset_text: str, offset: int) -> None:
    data = os.urandom(MiB + 777)
    source = tmp_path / "input.bin"
    source.write_bytes(data)
    result = run("write", image, "--offset", offset_text, source)
    assert result.exit_code == 0, result.stderr
    with vhdx.open(image) as disk:
        assert disk.pread(offset, len(data)) == data
        assert disk.pread(0, offset) == bytes(offset)
        assert disk.pread(offset + len(data), MiB) == bytes(MiB)


def test_write_from_stdin(run, image: Path) -> None:
    data = os.urandom(9 * MiB + 3)  # more than one chunk of the command's copy loop
    result = run("write", image, "--offset", "4097", "-", input=data)
    assert result.exit_code == 0, result.stderr
    result = run("write", image, "--offset", "100", input=b"default is stdin")
    assert result.exit_code == 0, result.stderr
    with vhdx.open(image) as disk:
        assert disk.pread(4097, len(data)) == data
        assert disk.pread(100, 16) == b"default is stdin"


def test_write_length_limit_and_json(run, tmp_path: Path, image: Path) -> None:
    source = tmp_path / "input.bin"
    source.write_bytes(b"A" * 5000)
    result = run("write", image, "--offset", "10", "--length", "1000", "--json", source)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"image": str(image), "offset": 10, "bytes": 1000, "operation": "write"}
    with vhdx.open(image) as disk:
        assert disk.pread(0, 1100) == bytes(10) + b"A" * 1000 + bytes(90)


def test_write_zero_and_discard(run, image: Path) -> None:
    with vhdx.open(image, "r+b") as disk:
        disk.pwrite(0, b"\xff" * (4 * MiB))
    result = run("write", image, "--offset", "1M", "--zero", "--length", "1M", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["operation"] == "zero"
    result = run("write", image, "--offset", "100", "--zero", "--length", "50")
    assert result.exit_code == 0, result.stderr
    result = run("write", image, "--offset", "2M", "--discard", "--length", "1M")
    assert result.exit_code == 0, result.stderr
    with vhdx.open(image) as disk:
        assert disk.pread(0, 100) == b"\xff" * 100
        assert disk.pread(100, 50) == bytes(50)
        assert disk.pread(MiB, 2 * MiB) == bytes(2 * MiB)  # zeroed, and a discarded whole block
        assert disk.pread(3 * MiB, MiB) == b"\xff" * MiB


def test_write_into_a_differencing_child(run, tmp_path: Path) -> None:
    parent = tmp_path / "base.vhdx"
    with vhdx.create(parent, 8 * MiB) as p:
        p.pwrite(0, b"\x11" * (8 * MiB))
    vhdx.create(tmp_path / "child.vhdx", parent=parent).close()
    parent_digest = file_digest(parent)
    result = run("write", tmp_path / "child.vhdx", "--offset", "1000", input=b"\x22" * 100)
    assert result.exit_code == 0, result.stderr
    assert file_digest(parent) == parent_digest
    with vhdx.open(tmp_path / "child.vhdx") as disk:
        assert disk.pread(990, 120) == b"\x11" * 10 + b"\x22" * 100 + b"\x11" * 10


@pytest.mark.parametrize(
    ("args", "stdin", "mentions"),
    [
        (["--offset", "16M"], b"x", "end"),  # nothing fits at the very end
        (["--offset", "17M"], b"", "past the end"),
        (["--offset", "16M", "-"], b"", None),  # writing nothing at the end is fine (exit 0)
        (["--offset", "15M"], b"y" * (MiB + 1), "end"),
        (["--offset", "0", "--zero"], None, "--length"),
        (["--offset", "0", "--discard"], None, "--length"),
        (["--offset", "0", "--zero", "--discard", "--length", "1M"], None, "exclude"),
        (["--offset", "15M", "--zero", "--length", "2M"], None, "end"),
    ],
    ids=["byte-at-end", "offset-past-end", "empty-at-end", "input-too-long", "zero-without-length",
         "discard-without-length", "zero-and-discard", "zero-past-end"],
)
def test_write_errors_are_one_line_and_leave_the_image_alone(run, image: Path, args: list[str],
                                                            stdin: bytes | None, mentions: str | None) -> None:
    digest = file_digest(image)
    result = run("write", image, *args, input=stdin)
    if mentions is None:
        assert result.exit_code == 0, result.stderr
    else:
        message = _one_line_error(result)
        assert mentions in message
    assert file_digest(image) == digest


def test_write_to_a_missing_image_or_input(run, tmp_path: Path, image: Path) -> None:
    message = _one_line_error(run("write", tmp_path / "nope.vhdx", "--offset", "0", input=b"x"))
    assert "nope.vhdx" in message
    digest = file_digest(image)
    message = _one_line_error(run("write", image, "--offset", "0", tmp_path / "no-input.bin"))
    assert "no-input.bin" in message
    assert file_digest(image) == digest
    result = run("write", image, input=b"x")  # --offset is required
    _one_line_error(result, code=2)
