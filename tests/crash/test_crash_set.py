"""Crash consistency of ``vhdx set`` (disk id and physical sector size rewritten through the log).

Power-cut states are built from a recording of the writable open as in test_crash_set_parent.
Every state must read exactly what the disk read before, keep its DataWriteGuid, and hold either
both old values or both new ones (one log entry: never a mix); running ``set`` again completes it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import uuid
from pathlib import Path

import pytest

import vhdx
from vhdx.ops import check, set_properties

from .recording import crash_state, window_bases
from .test_crash_set_parent import Recorder

MiB = 1 << 20
set_module = importlib.import_module("vhdx.ops.set_properties")  # the function shadows the module


def _read(path: Path) -> tuple[str, str, str, int]:
    with vhdx.open(path) as d:
        info = d.info()
        return hashlib.sha256(d.read()).hexdigest(), info.data_write_guid, info.disk_id, info.physical_sector_size


def test_crash_during_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "disk.vhdx"
    with vhdx.create(path, 8 * MiB, block_size=MiB, physical_sector_size=4096) as d:
        d.pwrite(0, os.urandom(2 * MiB))
    digest, guid, old_id, _ = _read(path)
    original = path.read_bytes()
    new_id = uuid.uuid4()
    recorder = Recorder(set_module.open_engine)
    monkeypatch.setattr(set_module, "open_engine", recorder)
    result = set_properties(path, disk_id=new_id, physical_sector_size=512)
    monkeypatch.undo()
    assert result.changed and recorder.file is not None
    ops = recorder.file.ops
    rng = random.Random("set-crash")
    tried = 0
    for window, before in window_bases(original, ops):
        for j in range(4):
            seed = rng.randrange(1 << 30)
            where = f"window {window} (seed {seed})"
            path.write_bytes(bytes(crash_state(before, ops, window, random.Random(seed))))
            got = _read(path)
            assert got[:2] == (digest, guid), where
            assert got[2:] in ((old_id, 4096), (str(new_id), 512)), where
            tried += 1
            if j == 0:
                set_properties(path, disk_id=new_id, physical_sector_size=512)
                assert _read(path) == (digest, guid, str(new_id), 512), where
                assert check(path).exit_status == 0, where
    assert tried >= 4 * 5
