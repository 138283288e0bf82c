"""The installed ``vhdx`` console script, run as a real process: JSON on stdout, a reader that
closes the pipe early, a missing file, a terminal on stdout. Oracles: expected.json and the
library's read of the same bytes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import vhdx
from cli_support import entry
from helpers import image_of, require_tool

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, documented in vhdx_cli.main


@pytest.fixture(scope="module")
def script() -> str:
    """The ``vhdx`` script of the environment running the tests (else the one on PATH)."""
    beside = Path(sys.executable).with_name("vhdx")
    if beside.is_file():
        return str(beside)
    require_tool("vhdx")
    found = shutil.which("vhdx")
    assert found is not None
    return found


def test_script_info_json(script: str) -> None:
    e = entry("dissect.hypervisor/dynamic.vhdx")
    done = subprocess.run([script, "info", "--json", str(image_of(e))], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["virtual-size"] == e.virtual_size and doc["cluster-size"] == e.block_size
    assert done.stderr == b""


def test_script_cat_into_closed_pipe_is_quiet(script: str) -> None:
    e = entry("qemu/dyn-1G-default")  # far larger than a pipe buffer
    path = image_of(e)
    proc = subprocess.Popen([script, "cat", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    head = proc.stdout.read(4096)
    proc.stdout.close()  # what `vhdx cat disk.vhdx | head -c 4096` does
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == EXIT_BROKEN_PIPE
    assert err == b""
    with vhdx.open(path) as disk:
        assert head == disk.pread(0, 4096)


def test_script_missing_file(script: str, tmp_path: Path) -> None:
    missing = tmp_path / "gone.vhdx"
    done = subprocess.run([script, "map", "--json", str(missing)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr == f"vhdx: {missing}: No such file or directory\n"
    assert done.stdout == ""


def test_script_cat_refuses_a_terminal(script: str) -> None:
    path = image_of(entry("velociraptor/test"))
    leader, follower = os.openpty()
    try:
        done = subprocess.run([script, "cat", str(path)], stdout=follower, stderr=subprocess.PIPE, text=True,
                              timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert done.returncode == 1
    assert done.stderr.startswith("vhdx: refusing") and len(done.stderr.splitlines()) == 1
