"""Linux attach prerequisites: every missing piece is named, and ``vhdx mount`` is suggested.

A real kernel attach needs the nbd module, nbd-client and root; where this machine has them all,
the last test attaches for real, reads the block device and detaches."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import vhdx
from vhdx_cli.attach.backends import AttachRequest
from vhdx_cli.attach.linux_nbd import NbdBackend

MiB = 1 << 20


def _fake_root(tmp_path: Path, module: bool) -> Path:
    root = tmp_path / "root"
    (root / "sys/block").mkdir(parents=True)
    if module:
        (root / "sys/module/nbd").mkdir(parents=True)
        for i in range(2):
            dev = root / f"sys/block/nbd{i}"
            dev.mkdir()
            (dev / "size").write_text("0\n")
    return root


def test_missing_module_client_and_root_are_each_named(tmp_path: Path) -> None:
    backend = NbdBackend(str(_fake_root(tmp_path, module=False)), which=lambda name: None, euid=lambda: 1000)
    ok, why = backend.available()
    assert not ok
    assert "nbd kernel module" in why and "nbd-client" in why and "root" in why
    image = tmp_path / "a.vhdx"
    vhdx.create(image, 4 * MiB).close()
    with pytest.raises(vhdx.VhdxError, match="vhdx mount"):
        backend.attach(AttachRequest(image=str(image)))


def test_only_root_missing(tmp_path: Path) -> None:
    backend = NbdBackend(str(_fake_root(tmp_path, module=True)), which=lambda name: "/usr/sbin/" + name,
                         euid=lambda: 1000)
    assert backend.missing() == ["connecting a kernel NBD device needs root (run with sudo)"]


def test_free_device_skips_busy_ones(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, module=True)
    (root / "sys/block/nbd0/pid").write_text("123\n")
    backend = NbdBackend(str(root), which=lambda name: "/x/" + name, euid=lambda: 0)
    assert backend.free_device() == "/dev/nbd1"
    (root / "sys/block/nbd1/size").write_text("2048\n")
    with pytest.raises(vhdx.VhdxError, match="in use"):
        backend.free_device()


def test_detach_of_something_never_attached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VHDX_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(vhdx.VhdxError, match="not attached"):
        NbdBackend().detach("/dev/nbd7")


def test_real_kernel_attach_when_this_machine_can(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = NbdBackend()
    ok, why = backend.available()
    if not ok:
        pytest.skip(f"no kernel NBD here: {why}")  # the unit tests above cover the refusal
    monkeypatch.setenv("VHDX_STATE_DIR", str(tmp_path / "state"))
    image = tmp_path / "a.vhdx"
    with vhdx.create(image, 8 * MiB, block_size=1 * MiB) as d:
        d.pwrite(MiB, b"kernel sees this")
    att = backend.attach(AttachRequest(image=str(image)))
    try:
        with open(att.target, "rb") as dev:
            dev.seek(MiB)
            assert dev.read(16) == b"kernel sees this"
        assert any(a.target == att.target for a in backend.list_attached())
    finally:
        backend.detach(att.target)
    assert shutil.which("nbd-client") is not None and not os.path.exists(f"/sys/block/{att.target[5:]}/pid")
