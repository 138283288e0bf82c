"""``vhdx mount`` for real: FUSE mounts read through the kernel, compared with ``vhdx cat`` and
with sfdisk's view of the same raw disk."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import vhdx
from helpers import require_module, require_tool
from partition_support import make_partitioned, vhdx_bytes

MiB = 1 << 20


def _vhdx(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "vhdx_cli.main", *args], capture_output=True, text=True,
                          timeout=120)
    if check and done.returncode != 0:
        raise AssertionError(f"vhdx {' '.join(args)} failed: {done.stderr}")
    return done


@pytest.fixture
def fuse_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("mfusepy")
    require_tool("fusermount3")
    if not os.path.exists("/dev/fuse"):
        if os.environ.get("VHDX_REQUIRE_INTEROP"):
            pytest.fail("/dev/fuse is missing and VHDX_REQUIRE_INTEROP is set")
        pytest.skip("/dev/fuse is missing")
    monkeypatch.setenv("VHDX_STATE_DIR", str(tmp_path / "state"))


def _cat(image: Path) -> bytes:
    return subprocess.run([sys.executable, "-m", "vhdx_cli.main", "cat", str(image)], capture_output=True,
                          check=True).stdout


def test_mount_read_only_with_partitions(tmp_path: Path, fuse_ready: None) -> None:
    raw, image = make_partitioned(tmp_path, "mbr")
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    _vhdx("mount", str(image), str(mnt), "--partitions")
    try:
        assert os.path.ismount(mnt)
        assert sorted(os.listdir(mnt)) == ["disk", "part1", "part2", "part5", "part6", "part7"]
        disk_bytes = (mnt / "disk").read_bytes()
        assert disk_bytes == _cat(image)
        data = raw.read_bytes()
        assert disk_bytes == data
        with vhdx.open(image) as d:
            from vhdx.ops.partitions import list_partitions
            parts = {p.index: p for p in list_partitions(d).partitions}
        for name in ("part1", "part2", "part5", "part6", "part7"):
            p = parts[int(name[4:])]
            assert (mnt / name).read_bytes() == data[p.start : p.end], name
        with pytest.raises(OSError):
            with open(mnt / "disk", "r+b") as f:
                f.write(b"x")
    finally:
        _vhdx("unmount", str(mnt))
    assert not os.path.ismount(mnt)
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


def test_writable_mount_writes_through_the_log(tmp_path: Path, fuse_ready: None) -> None:
    image = tmp_path / "w.vhdx"
    vhdx.create(image, 8 * MiB, block_size=1 * MiB).close()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    _vhdx("mount", str(image), str(mnt), "--writable")
    try:
        with open(mnt / "disk", "r+b") as f:
            f.seek(3 * MiB + 5)
            f.write(b"hello through fuse")
            f.flush()
            os.fsync(f.fileno())
        with pytest.raises(OSError):
            os.truncate(mnt / "disk", 4 * MiB)
    finally:
        _vhdx("unmount", str(mnt))
    with vhdx.open(image) as d:
        assert d.pread(3 * MiB + 5, 18) == b"hello through fuse"
        assert d.info().log_state == "empty"
    assert vhdx_bytes(image)[: 3 * MiB] == bytes(3 * MiB)


def test_mount_errors_are_one_line(tmp_path: Path, fuse_ready: None) -> None:
    image = tmp_path / "a.vhdx"
    vhdx.create(image, 4 * MiB).close()
    done = _vhdx("mount", str(image), str(tmp_path / "missing"), check=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    done = _vhdx("unmount", str(tmp_path), check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("vhdx: ") and "not mounted" in done.stderr
    bad = tmp_path / "bad.vhdx"
    bad.write_bytes(b"not a vhdx" * 1000)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = _vhdx("mount", str(bad), str(mnt), check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert not os.path.ismount(mnt)
