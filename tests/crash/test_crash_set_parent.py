"""Crash consistency of set-parent (the parent locator rewritten in place through the log).

The child is written through a RecordingFile (its writes and syncs logged). From the recording,
power-cut states are built as in test_crash_states: everything before some barrier, plus any
subset of the writes after it, in any order, some torn. Every state must:

* open with the new parent given explicitly, and read exactly what the chain read before;
* keep the child's DataWriteGuid (its own children stay linked);
* find the parent through its locator alone, or not at all (never a wrong one) -- the locator is
  either the old one or the new one, never a mix;
* after running set-parent again, open through the locator and read the same, and check clean.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import vhdx
from vhdx.errors import ParentNotFoundError
from vhdx.ops import check, set_parent

from .recording import RecordingFile, crash_state, window_bases

MiB = 1 << 20
SEEDS_PER_WINDOW = 4
set_parent_module = importlib.import_module("vhdx.ops.set_parent")  # the function shadows the module


def _digest(path: Path, **kw: Any) -> str:
    with vhdx.open(path, **kw) as d:
        return hashlib.sha256(d.read()).hexdigest()


def _state(path: Path) -> tuple[dict[str, str], str]:
    with vhdx.open(path, require_parent=False, ignore_id_mismatch=True) as d:
        info = d.info()
        return dict(info.parent_locator or {}), info.data_write_guid


class Recorder:
    """Stands in for ``open_engine`` in the set_parent module: the writable open of the child
    goes through a RecordingFile; its bytes are written back to the real file at close."""

    def __init__(self, real: Callable[..., Any]) -> None:
        self.real = real
        self.file: RecordingFile | None = None
        self.initial = b""

    def __call__(self, file: Any, *, writable: bool = False, **kwargs: Any) -> Any:
        if not writable:
            return self.real(file, writable=False, **kwargs)
        path = os.fspath(file)
        self.initial = Path(path).read_bytes()
        rec = RecordingFile(self.initial, name=path)
        engine = self.real(rec, writable=True, **kwargs)
        real_close = engine.close

        def close() -> None:
            real_close()
            Path(path).write_bytes(bytes(rec.data))

        engine.close = close
        self.file = rec
        return engine


def test_crash_during_set_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "vm"
    folder.mkdir()
    base, child = folder / "base.vhdx", folder / "child.avhdx"
    with vhdx.create(base, 8 * MiB, block_size=MiB) as d:
        d.pwrite(0, os.urandom(3 * MiB))
    with vhdx.create(child, parent=base, block_size=MiB) as d:
        d.pwrite(MiB + 4096, os.urandom(20000))
        d.pwrite(5 * MiB, os.urandom(MiB))
    expected = _digest(child)
    old_locator, guid = _state(child)
    (folder / "store").mkdir()
    new_base = folder / "store" / "golden.vhdx"
    shutil.move(base, new_base)
    with pytest.raises(ParentNotFoundError):
        vhdx.open(child)
    original = child.read_bytes()

    recorder = Recorder(set_parent_module.open_engine)
    monkeypatch.setattr(set_parent_module, "open_engine", recorder)
    result = set_parent(child, new_base)
    monkeypatch.undo()
    assert result.changed and recorder.file is not None and recorder.initial == original
    new_locator = result.locator_after
    assert new_locator != old_locator

    ops = recorder.file.ops
    rng = random.Random("set-parent-crash")
    tried = reruns = 0
    for window, before in window_bases(original, ops):
        for j in range(SEEDS_PER_WINDOW):
            seed = rng.randrange(1 << 30)
            state = crash_state(before, ops, window, random.Random(seed))
            where = f"window {window} (seed {seed})"
            child.write_bytes(bytes(state))
            assert _digest(child, parent=new_base) == expected, where
            locator, state_guid = _state(child)
            assert state_guid == guid, where
            assert locator in (old_locator, new_locator), where
            try:
                found = _digest(child)
            except ParentNotFoundError:
                assert locator == old_locator, where
            else:
                assert locator == new_locator and found == expected, where
            tried += 1
            if j == 0 or rng.random() < 0.3:
                set_parent(child, new_base)
                assert _digest(child) == expected, where
                assert _state(child) == (new_locator, guid), where
                report = check(child)
                assert report.exit_status == 0, f"{where}: {report.to_dict()}"
                reruns += 1
    assert tried >= 4 * 5 and reruns > 3
