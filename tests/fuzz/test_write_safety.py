"""Writes stay inside the image (issue #7, item 3): what a read-write open does with damage, and
with paths that are not plain files.

Decisions (README "Hostile input"):

* A read-write open of an image with damage that reads tolerate but no crash of a conforming
  writer leaves (a damaged region table copy, sector bitmap blocks marked present in a disk
  without a parent) raises ``RepairNeededError`` before the first byte changes, unless
  ``allow_damaged=True``; ``vhdx check --repair`` fixes both. Crash states stay writable: a torn
  header (the session's header update rewrites both slots), a LogGuid without entries (cleared),
  a partial last block (QEMU's fixed images).
* Paths: reading follows symbolic links and accepts block devices; writing refuses a symbolic
  link (give its target) and a block device; FIFOs, sockets and character devices are refused
  without blocking. All are ``ValueError`` (the caller's input), one line from the CLI.

Oracles: the file's bytes before and after (``craft.unchanged``), and reads through the library
of what was written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import craft
import vhdx
from helpers import require_tool
from vhdx.constants import (
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    MiB,
    PayloadBlockState,
    SectorBitmapState,
)
from vhdx.disk import open_engine
from vhdx.errors import RepairNeededError
from vhdx.ops import check

from .surface import watchdog


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.vhdx"
    with vhdx.create(path, 8 * MiB, block_size=MiB) as disk:
        disk.pwrite(0, b"\x11" * MiB)
        disk.pwrite(3 * MiB, b"\x33" * 4096)
    return path


def _damage_region_table(slot: int) -> object:
    def damage(path: Path) -> None:
        craft.flip_byte(path, (REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET)[slot - 1] + 100)
    return damage


def _bitmap_present_in_dynamic(path: Path) -> None:
    layout = craft.read_layout(path)
    with open(path, "ab") as f:  # the "bitmap block" gets space of its own
        f.write(bytes(MiB))
    craft.set_bat_entry(path, layout.bitmap_entry_offset(0), SectorBitmapState.PRESENT, layout.file_size)


DAMAGE = {"region table 1": _damage_region_table(1), "region table 2": _damage_region_table(2),
          "sector bitmap in a dynamic disk": _bitmap_present_in_dynamic}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_refuses_writes_until_repaired(image: Path, kind: str) -> None:
    DAMAGE[kind](image)  # type: ignore[operator]
    with vhdx.open(image) as disk:  # reads tolerate it
        before = disk.read()
        assert disk.info().problems
    with craft.unchanged(image):
        with pytest.raises(RepairNeededError, match="check --repair"):
            vhdx.open(image, "r+b")
        with pytest.raises(RepairNeededError):
            open_engine(image, writable=True)  # what every in-place operation opens with
    report = check(image, repair=True)
    assert report.corruptions == 0, report.to_dict()
    with vhdx.open(image, "r+b") as disk:
        assert disk.read() == before
        disk.pwrite(5 * MiB, b"\x55" * 100)
    with vhdx.open(image) as disk:
        assert disk.pread(5 * MiB, 100) == b"\x55" * 100 and not disk.info().problems


def test_allow_damaged_writes_anyway(image: Path) -> None:
    _damage_region_table(2)(image)  # type: ignore[operator]
    with vhdx.open(image, "r+b", allow_damaged=True) as disk:
        disk.pwrite(6 * MiB, b"\x66" * 512)
    with vhdx.open(image) as disk:
        assert disk.pread(6 * MiB, 512) == b"\x66" * 512


@pytest.mark.parametrize("crash_state", ["torn header", "log guid without entries"])
def test_crash_states_stay_writable(image: Path, crash_state: str) -> None:
    if crash_state == "torn header":
        current = craft.read_layout_headers(image).current_index
        craft.flip_byte(image, (HEADER_1_OFFSET, HEADER_2_OFFSET)[1 - current] + 40)  # the slot written first
    else:
        craft.rewrite_headers(image, log_guid=uuid.uuid4())
    with vhdx.open(image) as disk:
        assert disk.info().problems  # tolerated, and reported
    with vhdx.open(image, "r+b") as disk:
        disk.pwrite(2 * MiB, b"\x22" * 512)
    with vhdx.open(image) as disk:
        assert disk.pread(2 * MiB, 512) == b"\x22" * 512
        assert not disk.info().problems  # the session's header updates repaired it


def test_cli_write_on_damaged_image_is_one_line(image: Path) -> None:
    _damage_region_table(1)(image)  # type: ignore[operator]
    with craft.unchanged(image):
        result = subprocess.run(["vhdx", "write", str(image), "--offset", "0", "--zero", "--length", "512"],
                                capture_output=True, text=True, env={**os.environ, "PATH": _venv_path()})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "check --repair" in result.stderr and "Traceback" not in result.stderr


def _venv_path() -> str:
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


@pytest.mark.parametrize("aim", ["its own old space", "far past the end", "the BAT region", "the metadata region",
                                 "the log", "another block"])
def test_fixed_disk_block_reading_as_zeros_never_writes_where_its_entry_points(tmp_path: Path, aim: str) -> None:
    """A fixed disk keeps its blocks in place, so a write to a block that reads as zeros used to
    go wherever its entry's (reserved) FileOffsetMB pointed (found by atheris). Only the block's
    own free space is taken back; anything else gets new space at the end of the file."""
    path = tmp_path / "fixed.vhdx"
    with vhdx.create(path, 4 * MiB, block_size=MiB, disk_type="fixed") as disk:
        for block in range(4):
            disk.pwrite(block * MiB, bytes([0x10 + block]) * MiB)
    layout = craft.read_layout(path)
    own = layout.block_file_offset(2)
    offset = {"its own old space": own, "far past the end": 1 << 50, "the BAT region": layout.bat_offset,
              "the metadata region": layout.metadata_offset, "the log": layout.log_offset,
              "another block": layout.block_file_offset(1)}[aim]
    craft.set_bat_entry(path, layout.payload_entry_offset(2), PayloadBlockState.ZERO, offset)
    size_before = path.stat().st_size
    with vhdx.open(path) as disk:
        model = bytearray(disk.read())
    assert model[2 * MiB : 3 * MiB] == bytes(MiB)
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(2 * MiB + 1000, b"\xab" * 5000)
    model[2 * MiB + 1000 : 2 * MiB + 6000] = b"\xab" * 5000
    with vhdx.open(path) as disk:
        assert disk.read() == model
    assert check(path).corruptions == 0
    grown = path.stat().st_size - size_before
    assert grown == (0 if aim == "its own old space" else MiB), grown
    assert (craft.read_layout(path).block_file_offset(2) == own) == (aim == "its own old space")


# --- paths that are not plain files -------------------------------------------------------------------


def test_symlink_is_followed_for_reading_and_refused_for_writing(image: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.vhdx"
    link.symlink_to(image)
    with vhdx.open(link) as disk:
        assert disk.pread(0, 4) == b"\x11" * 4
    with craft.unchanged(image):
        with pytest.raises(ValueError, match="symbolic link"):
            vhdx.open(link, "r+b")
        result = subprocess.run(["vhdx", "write", str(link), "--offset", "0", "--zero", "--length", "512"],
                                capture_output=True, text=True, env={**os.environ, "PATH": _venv_path()})
        assert result.returncode == 1 and "symbolic link" in result.stderr and "Traceback" not in result.stderr
    with vhdx.open(os.path.realpath(link), "r+b") as disk:  # the target, named explicitly
        disk.pwrite(0, b"\x99" * 4)
    with vhdx.open(link) as disk:
        assert disk.pread(0, 4) == b"\x99" * 4


def test_symlinked_folder_is_not_a_symlinked_file(image: Path, tmp_path: Path) -> None:
    """Only the last component is refused: a folder reached through a link is an ordinary path."""
    (tmp_path / "via").symlink_to(image.parent)
    with vhdx.open(tmp_path / "via" / image.name, "r+b") as disk:
        disk.pwrite(0, b"\x77")


@pytest.mark.parametrize("mode", ["rb", "r+b"])
def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path, mode: str) -> None:
    fifo = tmp_path / "fifo.vhdx"
    os.mkfifo(fifo)
    with watchdog(30.0), pytest.raises((ValueError, OSError)):  # opening a FIFO used to block forever
        vhdx.open(fifo, mode)


@pytest.mark.parametrize("mode", ["rb", "r+b"])
@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_character_devices_are_refused(device: str, mode: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist on this system")
    with watchdog(30.0), pytest.raises(ValueError, match="not a regular file"):
        vhdx.open(device, mode)


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a regular file"):
        vhdx.open(tmp_path)
    with pytest.raises(OSError):
        vhdx.open(tmp_path, "r+b")


def test_block_device_is_read_only(image: Path) -> None:
    """An image on a raw device (here a loop device over the file) reads; writing is refused."""
    require_tool("losetup")
    if os.geteuid() != 0:
        pytest.skip("attaching a loop device needs root")
    attach = subprocess.run(["losetup", "--find", "--show", "--read-only", str(image)], capture_output=True, text=True)
    if attach.returncode != 0:
        pytest.skip(f"no loop device available here: {attach.stderr.strip()}")
    device = attach.stdout.strip()
    try:
        with vhdx.open(image) as disk:
            expected = disk.read()
        with vhdx.open(device) as disk:
            assert disk.read() == expected
        with pytest.raises(ValueError, match="block device"):
            vhdx.open(device, "r+b")
    finally:
        subprocess.run(["losetup", "--detach", device], check=True)

