"""Evidence guarantees: every read-only command and API opens the file read-only at the OS level,
replays a log in memory only, and never changes the file's bytes or its timestamps (modification,
change and access times), on every image of the shared corpus."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import vhdx
from helpers import expected_params, fixture_path, image_of
from vhdx.disk import open_engine
from vhdx_cli.main import cli

SMALL = 1 << 30  # images read in full (cat, hash) only up to this virtual size


def _noatime_digest(path: Path) -> str:
    """sha256 of the file without touching its access time (O_NOATIME, as the library reads)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    try:
        h = hashlib.sha256()
        while chunk := os.read(fd, 1 << 22):
            h.update(chunk)
        return h.hexdigest()
    finally:
        os.close(fd)


def _stamp(path: Path) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_atime_ns


def _commands(e, path: Path, tmp: Path) -> list[list[str]]:
    cmds = [["info", path], ["info", "--json", path], ["info", "--forensic", path], ["map", "--json", path],
            ["chain", path], ["check", path], ["check", "--json", path], ["partitions", path], ["log", path],
            ["recover", "--all", path], ["recover", "--out", tmp / "carved", path]]
    if e.virtual_size <= SMALL:
        cmds += [["cat", path], ["hash", "-a", "sha256,md5", "--partitions", path]]
    return cmds


def _prepare(e, tmp: Path) -> Path:
    """A private copy of the image (with its parent beside it for a differencing child), its
    access time pushed into the past so that a read that updates it (relatime) would show."""
    folder = tmp / "evidence"
    folder.mkdir()
    path = folder / Path(image_of(e)).name
    shutil.copyfile(image_of(e), path)
    if getattr(e, "parent_file", None):
        shutil.copyfile(fixture_path(e.parent_file, e.parent_name_on_disk), folder / e.parent_name_on_disk)
    for p in folder.iterdir():
        st = os.stat(p)
        os.utime(p, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))  # atime older than mtime
    return path


@pytest.mark.parametrize("e", expected_params())
def test_read_only_commands_change_nothing(e, tmp_path: Path) -> None:
    path = _prepare(e, tmp_path)
    files = sorted(path.parent.iterdir())
    before = {p: (_noatime_digest(p), _stamp(p)) for p in files}
    runner = CliRunner()
    for cmd in _commands(e, path, tmp_path):
        result = runner.invoke(cli, [str(c) for c in cmd], catch_exceptions=False)
        # 1: a differencing image whose parent is not in the corpus; 2/3: check findings. Never a traceback.
        assert result.exit_code in (0, 1, 2, 3), (cmd, result.output)
        after = {p: (_noatime_digest(p), _stamp(p)) for p in files}
        assert after == before, f"vhdx {' '.join(map(str, cmd))} changed the evidence"


@pytest.mark.parametrize("e", expected_params(lambda e: e.log_needs_replay))
def test_open_is_read_only_at_the_os_level_and_replays_in_memory(e, tmp_path: Path) -> None:
    path = _prepare(e, tmp_path)
    before = (_noatime_digest(path), _stamp(path))
    with vhdx.open(path) as disk:
        assert disk.has_pending_log
        fd = disk._engine.image.raw_source.fd  # noqa: SLF001 - the OS-level check needs the descriptor
        flags = int(Path(f"/proc/self/fdinfo/{fd}").read_text().split("flags:")[1].split()[0], 8)
        assert flags & os.O_ACCMODE == os.O_RDONLY
        disk.read(1 << 20)
    engine = open_engine(path)
    try:
        flags = int(Path(f"/proc/self/fdinfo/{engine.image.raw_source.fd}").read_text().split("flags:")[1].split()[0], 8)
        assert flags & os.O_ACCMODE == os.O_RDONLY
    finally:
        engine.close()
    assert (_noatime_digest(path), _stamp(path)) == before
