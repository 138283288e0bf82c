"""Fixtures for the CLI tests: a click runner, shared fixtures by id, and a differencing chain laid
out on disk the way its locator expects (child and parent side by side)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli_support import CHAIN_ID, PARENT_ID, entry
from helpers import SharedFixture, fixture_path, image_of
from vhdx_cli.main import cli


@pytest.fixture()
def invoke() -> Callable[..., Result]:
    """Run ``vhdx ARGS...`` in-process; stdout and stderr are kept apart, and an exception that
    escapes the command (a traceback, for a user) propagates into the test instead of being
    folded into exit status 1."""
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        runner = CliRunner()  # click >= 8.2 always keeps stderr apart

    def run(*args: str) -> Result:
        return runner.invoke(cli, [str(a) for a in args], prog_name="vhdx", catch_exceptions=False)

    return run


@dataclass(frozen=True)
class ChainLayout:
    folder: Path
    child: Path
    parent: Path
    child_entry: SharedFixture
    parent_entry: SharedFixture


@pytest.fixture(scope="session")
def chain_layout(tmp_path_factory: pytest.TempPathFactory) -> ChainLayout:
    """The Windows-made differencing child next to a copy of its synthetic parent, under the file
    name its locator records (``parent_name_on_disk``). Shared read-only by the tests."""
    child_entry = entry(CHAIN_ID)
    folder = tmp_path_factory.mktemp("chain")
    child = folder / child_entry.image_name
    parent = folder / child_entry.parent_name_on_disk
    shutil.copyfile(image_of(child_entry), child)
    shutil.copyfile(fixture_path(child_entry.parent_file, child_entry.parent_name_on_disk), parent)
    return ChainLayout(folder, child, parent, child_entry, entry(PARENT_ID))


@pytest.fixture()
def lonely_child(tmp_path: Path) -> Path:
    """The differencing child alone in a folder: its parent cannot be found."""
    child_entry = entry(CHAIN_ID)
    child = tmp_path / child_entry.image_name
    shutil.copyfile(image_of(child_entry), child)
    return child
