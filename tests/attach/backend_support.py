"""A third-party attach backend installed the way a real distribution is: a module and a
``*.dist-info`` folder with ``entry_points.txt`` in a directory put on ``sys.path``, so
``importlib.metadata`` finds it through its ordinary path finder (nothing is monkeypatched in
the registry)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

DIST_NAME = "vhdx-fake-backend"
MODULE = "vhdx_fake_attach_backend"

FAKE_MODULE = '''\
"""A stand-in third-party backend: remembers what it was asked, attaches nothing."""

from vhdx_cli.attach.backends import Attachment, BackendBase

CALLS = []


class FakeBackend(BackendBase):
    name = "fake"

    def __init__(self, settings):
        self.settings = settings
        CALLS.append(("init", settings))

    def available(self):
        return True, "always (a test double)"

    def attach(self, req):
        CALLS.append(("attach", req))
        return Attachment("fake", req.image, "fake0", req.read_only, {"options": dict(req.options)})

    def detach(self, target):
        CALLS.append(("detach", target))

    def list_attached(self):
        return [Attachment("fake", "/images/a.vhdx", "fake0", True, {})]


class Hijacker(FakeBackend):
    name = "hyperv"


class NoSettings(BackendBase):
    name = "nosettings"

    def __init__(self, verbose=False):
        CALLS.append(("init-nosettings", verbose))

    def available(self):
        return True, ""
'''

ENTRY_POINTS = f"""\
[vhdx.attach_backends]
fake = {MODULE}:FakeBackend
hyperv = {MODULE}:Hijacker
nosettings = {MODULE}:NoSettings
missing = {MODULE}:DoesNotExist

[console_scripts]
unrelated = {MODULE}:FakeBackend
"""


def install_fake_backend(folder: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    """Install the fake distribution under ``folder``; return its module (for ``CALLS``)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE}.py").write_text(FAKE_MODULE)
    info = folder / f"{DIST_NAME.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DIST_NAME}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    importlib.invalidate_caches()
    return importlib.import_module(MODULE)
