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


def test_attach_path_with_a_stand_in_kernel_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything on our side of a kernel attach, for real: the background ``vhdx serve`` on a
    private Unix socket, the ``nbd-client -unix SOCKET DEVICE -N disk`` call, the state record,
    and detach stopping the server. Only the kernel is replaced: a stand-in ``nbd-client`` copies
    the export with nbdcopy (a real NBD client) over that socket into a file named after the
    device."""
    from helpers import require_tool

    require_tool("nbdcopy")
    monkeypatch.setenv("VHDX_STATE_DIR", str(tmp_path / "state"))
    out = tmp_path / "devices"
    out.mkdir()
    fake = tmp_path / "nbd-client"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-d" ]; then echo "$2" >> {out}/disconnected; exit 0; fi\n'
        '[ "$1" = "-unix" ] || exit 3\n'
        'sock="$2"; dev="$3"; shift 3\n'
        '[ "$1" = "-N" ] || exit 4\n'
        f'exec nbdcopy "nbd+unix:///$2?socket=$sock" {out}/$(basename "$dev")\n')
    fake.chmod(0o755)
    root = _fake_root(tmp_path, module=True)
    backend = NbdBackend(str(root), which=lambda name: str(fake) if name == "nbd-client" else shutil.which(name),
                         euid=lambda: 0)
    assert backend.available() == (True, "")
    image = tmp_path / "a.vhdx"
    with vhdx.create(image, 8 * MiB, block_size=1 * MiB) as d:
        d.pwrite(MiB, b"the kernel would see this")
    att = backend.attach(AttachRequest(image=str(image)))
    assert att.target == "/dev/nbd0" and att.read_only
    with vhdx.open(image) as d:
        assert (out / "nbd0").read_bytes() == d.read()
    listed = backend.list_attached()
    assert [a.target for a in listed] == ["/dev/nbd0"]
    pid = att.details["pid"]
    backend.detach("/dev/nbd0")
    assert (out / "disconnected").read_text().split() == ["/dev/nbd0"]
    assert backend.list_attached() == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
