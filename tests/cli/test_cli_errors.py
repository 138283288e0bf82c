"""Failures are one line on stderr starting ``vhdx: ``, with a documented exit status, and never a
traceback (the runner lets any escaping exception fail the test). Also: help and version."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click
import pytest

import vhdx
import vhdx_cli.options
from cli_support import entry
from helpers import image_of
from vhdx_cli.main import cli

COMMANDS = ["info", "cat", "map", "chain"]


def _not_vhdx(tmp: Path) -> Path:
    path = tmp / "notes.txt"
    path.write_text("this is not a virtual disk\n" * 50000)
    return path


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.vhdx"
    path.write_bytes(b"")
    return path


def _truncated(size: int) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / f"truncated-{size}.vhdx"
        with open(image_of(entry("velociraptor/test")), "rb") as f:
            path.write_bytes(f.read(size))
        return path

    return make


def _missing(tmp: Path) -> Path:
    return tmp / "no-such.vhdx"


def _directory(tmp: Path) -> Path:
    return tmp


CASES = {
    "not-vhdx": _not_vhdx,
    "empty": _empty,
    "truncated-in-headers": _truncated(70000),
    "truncated-after-headers": _truncated(3 << 20),  # headers fine; metadata/BAT regions cut off
    "missing": _missing,
    "directory": _directory,
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_unreadable_image_is_one_line_exit_1(invoke, tmp_path: Path, command: str, case: str) -> None:
    path = CASES[case](tmp_path)
    result = invoke(command, path)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("vhdx: ")
    assert str(path) in lines[0]  # the message names the image
    assert "Traceback" not in result.stderr
    assert result.stdout_bytes == b""


def test_keyboard_interrupt_exits_130(invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(vhdx_cli.options.vhdx, "open", interrupted)
    result = invoke("info", "whatever.vhdx")
    assert result.exit_code == 130
    assert "Traceback" not in result.stderr


def test_library_error_message_is_kept(invoke, tmp_path: Path) -> None:
    """The line carries the library's own message (image, structure, offset), unchanged."""
    path = _truncated(70000)(tmp_path)
    with pytest.raises(vhdx.VhdxError) as caught:
        vhdx.open(path)
    result = invoke("info", path)
    assert result.stderr == f"vhdx: {caught.value}\n"


def test_unknown_command_is_a_usage_error(invoke) -> None:
    result = invoke("frobnicate", "x.vhdx")
    assert result.exit_code == 2


def test_version(invoke) -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and vhdx.__version__ in result.stdout


def test_every_command_has_examples_in_help(invoke) -> None:
    names = cli.list_commands(click.Context(cli))
    assert set(COMMANDS) <= set(names)
    for name in names:
        result = invoke(name, "--help")
        assert result.exit_code == 0, name
        assert "Examples:" in result.stdout and f"vhdx {name} " in result.stdout, name
