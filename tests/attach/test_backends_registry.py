"""The backend registry: built-ins loaded lazily by import string, third-party backends from the
``vhdx.attach_backends`` entry-point group (a real dist-info on sys.path), and the errors for an
unknown or broken backend."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vhdx_cli.attach import backends
from vhdx_cli.attach.backends import (
    AttachError,
    AttachRequest,
    Backend,
    BackendBase,
    BackendSettings,
    backend_spec,
    create_backend,
    default_backend_name,
    parse_options,
    registered_backends,
)
from vhdx_cli.attach.hyperv import HyperVBackend

from .backend_support import DIST_NAME, install_fake_backend


def test_builtins() -> None:
    specs = registered_backends()
    assert {name: (s.target, s.origin) for name, s in specs.items() if s.origin == "built-in"} == {
        "hyperv": ("vhdx_cli.attach.hyperv:HyperVBackend", "built-in"),
        "nbd": ("vhdx_cli.attach.linux_nbd:NbdBackend", "built-in"),
        "fuse": ("vhdx_cli.attach.fuse:FuseBackend", "built-in"),
    }
    backend = create_backend("hyperv", BackendSettings(dry_run=True))
    assert isinstance(backend, HyperVBackend) and isinstance(backend, Backend)
    assert backend.settings.dry_run


def test_builtins_load_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    # Listing never imports a backend's module; a broken one fails only when chosen.
    monkeypatch.setitem(backends.BUILTIN_BACKENDS, "broken", "vhdx_cli.attach.no_such_module:Backend")
    assert "broken" in registered_backends()
    assert "vhdx_cli.attach.no_such_module" not in sys.modules
    with pytest.raises(AttachError, match=r"the broken backend \(vhdx_cli.attach.no_such_module:Backend, built-in\) "
                                          r"cannot be loaded: No module named"):
        create_backend("broken")
    assert isinstance(create_backend("hyperv", BackendSettings(dry_run=True)), HyperVBackend)


def test_unknown_backend() -> None:
    with pytest.raises(AttachError, match=r"unknown attach backend 'iscsi' \(known: .*hyperv.*nbd"):
        create_backend("iscsi")


def test_entry_point_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = install_fake_backend(tmp_path / "site", monkeypatch)
    specs = registered_backends()
    fake = specs["fake"]
    assert fake.origin == f"entry point of {DIST_NAME}"
    assert fake.target == "vhdx_fake_attach_backend:FakeBackend"
    assert "unrelated" not in specs  # other groups are not backends
    settings = BackendSettings(options={"k": "v"})
    backend = create_backend("fake", settings)
    assert isinstance(backend, Backend)
    assert module.CALLS == [("init", settings)]  # type: ignore[attr-defined]
    a = backend.attach(AttachRequest("/images/x.vhdx", options={"k": "v"}))
    assert (a.backend, a.target, a.details) == ("fake", "fake0", {"options": {"k": "v"}})
    with pytest.raises(AttachError, match="attaches to this host only and has no virtual machines"):
        backend.add_to_vm(AttachRequest("/images/x.vhdx", vm="v"))


def test_entry_point_cannot_shadow_a_builtin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_backend(tmp_path / "site", monkeypatch)
    assert backend_spec("hyperv").origin == "built-in"
    assert isinstance(create_backend("hyperv", BackendSettings(dry_run=True)), HyperVBackend)


def test_entry_point_that_does_not_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_backend(tmp_path / "site", monkeypatch)
    with pytest.raises(AttachError, match=rf"the missing backend \(vhdx_fake_attach_backend:DoesNotExist, entry point "
                                          rf"of {DIST_NAME}\) cannot be loaded"):
        create_backend("missing")


def test_factory_without_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = install_fake_backend(tmp_path / "site", monkeypatch)
    create_backend("nosettings")
    assert module.CALLS == [("init-nosettings", False)]  # type: ignore[attr-defined]
    with pytest.raises(AttachError, match="takes no --host, --user, --dry-run or -o settings"):
        create_backend("nosettings", BackendSettings(dry_run=True))


def test_backend_base_refuses_vms() -> None:
    class Plain(BackendBase):
        name = "plain"

    with pytest.raises(AttachError, match="the plain backend attaches to this host only"):
        Plain().remove_from_vm("x", "vm")


def test_parse_options() -> None:
    assert parse_options(("a=1", "b=x=y", "Empty=")) == {"a": "1", "b": "x=y", "empty": ""}
    with pytest.raises(AttachError, match="expected KEY=VALUE"):
        parse_options(("novalue",))
    with pytest.raises(AttachError, match="expected KEY=VALUE"):
        parse_options(("=v",))


def test_default_backend_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends.sys, "platform", "linux")
    assert default_backend_name() == "nbd"
    assert default_backend_name(host="hv01") == "hyperv"
    assert default_backend_name(vm="web01") == "hyperv"
    monkeypatch.setattr(backends.sys, "platform", "win32")
    assert default_backend_name() == "hyperv"
