"""Crash consistency of merge (and of deleting a checkpoint from the middle of a chain).

The operation runs with every file it opens for writing replaced by a RecordingFile (its writes,
truncates and syncs are logged; at close the bytes go back to the real file, so the next step
sees them). From each recording, power-cut states are built as in test_crash_states: everything
before some barrier, plus any subset of the writes after it, in any order, some torn. For a crash
while file k was being written, files written earlier hold their final bytes, the others their
original ones.

Every crash state must read, through the top image's chain, exactly what it read before the
operation (the images above the target override every range the target gained, and the link
accepts the new DataWriteGuid through parent_linkage2), and running the operation again on a
share of the states must complete it: the target (or the active disk) then reads the same, the
merged files are gone, and ``vhdx check`` (and ``qemu-img check`` where qemu can open the target)
finds no corruption.

VHDX_MERGE_CRASH_STATES (default 240 in all) sets how many crash states are tried.
"""

from __future__ import annotations

import importlib
import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import require_tool
from merge_support import MiB, content, make_chain

import vhdx
from vhdx.ops import check, delete_checkpoint, list_checkpoints, merge

from .recording import RecordingFile, crash_state, window_bases, windows

TOTAL_STATES = int(os.environ.get("VHDX_MERGE_CRASH_STATES", "240"))
# Besides the first state of every other window, this share of the crash states is also
# completed by running the operation again (each run costs a whole merge and checks).
RERUN_SHARE = 0.08
merge_module = importlib.import_module("vhdx.ops.merge")  # the function vhdx.ops.merge shadows it


@dataclass
class Recording:
    path: str
    initial: bytes
    file: RecordingFile


@dataclass
class Recorder:
    """Stands in for ``open_engine`` in the merge module: writable opens get a RecordingFile."""

    real: Callable[..., Any]
    recordings: list[Recording] = field(default_factory=list)

    def __call__(self, file: Any, *, writable: bool = False, **kwargs: Any) -> Any:
        if not writable:
            return self.real(file, writable=False, **kwargs)
        path = os.fspath(file)
        initial = Path(path).read_bytes()
        rec = RecordingFile(initial, name=path)
        engine = self.real(rec, writable=True, **kwargs)
        real_close = engine.close

        def close() -> None:
            real_close()
            Path(path).write_bytes(bytes(rec.data))

        engine.close = close
        self.recordings.append(Recording(path, initial, rec))
        return engine


@dataclass
class Case:
    name: str
    names: list[str]
    sector: int
    blocks: list[int]
    top: str  # the image whose content must never change
    run: Callable[[Path], object]  # the operation, given the folder
    finish: Callable[[Path], None]  # run it again after a crash
    gone: list[str]  # files that no longer exist once it is complete
    qemu_target: str | None  # a 512-byte non-differencing target qemu-img can check
    share: float
    base_type: str = "dynamic"


def _merge_child(folder: Path) -> object:
    return merge(folder / "child.avhdx")


def _merge_top(folder: Path) -> object:
    return merge(folder / "top.avhdx", into=folder / "base.vhdx")


def _delete_middle(folder: Path) -> object:
    return delete_checkpoint(folder / "disk.vhdx", "disk_1.avhdx")


def _finish_delete_middle(folder: Path) -> None:
    leftovers = list_checkpoints(folder / "disk.vhdx").leftovers
    # Crashed after the next disk was re-pointed: the merged disk is a leftover, which the same
    # command removes (replaying the re-pointed disk's log if it still holds the locator edit).
    assert [Path(p).name for p in leftovers] in ([], ["disk_1.avhdx"])
    _delete_middle(folder)


CASES = [
    Case("child-into-parent-512", ["base.vhdx", "child.avhdx"], 512, [2 * MiB, 1 * MiB], "child.avhdx",
         _merge_child, _merge_child, ["child.avhdx"], "base.vhdx", 0.35),
    Case("top-into-fixed-grandparent-4096", ["base.vhdx", "mid.avhdx", "top.avhdx"], 4096,
         [1 * MiB, 2 * MiB, 1 * MiB], "top.avhdx", _merge_top, _merge_top, ["mid.avhdx", "top.avhdx"], None, 0.35,
         base_type="fixed"),
    Case("checkpoint-delete-middle-512", ["disk.vhdx", "disk_1.avhdx", "disk_2.avhdx"], 512,
         [1 * MiB, 2 * MiB, 1 * MiB], "disk_2.avhdx", _delete_middle, _finish_delete_middle, ["disk_1.avhdx"],
         None, 0.2),
]


def _qemu_check(path: Path) -> None:
    r = subprocess.run(["qemu-img", "check", "-f", "vhdx", str(path)], capture_output=True, text=True)
    # 3: leaked clusters only (space a crashed writer allocated but never referenced).
    assert r.returncode in (0, 3), r.stdout + r.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_crash_during_merge_keeps_the_chain_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     case: Case) -> None:
    if case.qemu_target:
        require_tool("qemu-img")
    origin = tmp_path / "origin"
    origin.mkdir()
    make_chain(origin, case.names, size=4 * MiB, sector=case.sector, block_sizes=case.blocks, seed=case.name, ops=20,
               base_type=case.base_type)
    expected = content(origin / case.top)
    originals = {n: (origin / n).read_bytes() for n in case.names}

    live = tmp_path / "live"
    shutil.copytree(origin, live)
    recorder = Recorder(merge_module.open_engine)
    monkeypatch.setattr(merge_module, "open_engine", recorder)
    case.run(live)
    monkeypatch.undo()
    assert recorder.recordings, "the operation wrote nothing"
    survivors = [n for n in case.names if n not in case.gone]
    assert all(not (live / n).exists() for n in case.gone)
    assert content(live / (case.top if case.top in survivors else survivors[-1])) == expected

    rng = random.Random(f"merge-crash-{case.name}")
    states = max(1, int(TOTAL_STATES * case.share))
    spans = sum(len(windows(r.file.ops)) for r in recorder.recordings)
    per_window = max(1, -(-states // spans))
    work = Path(os.environ.get("VHDX_CRASH_TMP", "/dev/shm" if os.path.isdir("/dev/shm") else tmp_path))
    scratch = Path(tempfile.mkdtemp(prefix="vhdx-merge-crash-", dir=work))
    folder = Folder(scratch)
    current = dict(originals)  # every file as it is before the recording being cut
    tried = reruns = 0
    try:
        for k, rec in enumerate(recorder.recordings):
            name = Path(rec.path).name
            assert current[name] == rec.initial
            ops = rec.file.ops
            for window, base in window_bases(rec.initial, ops):
                for j in range(per_window):
                    seed = rng.randrange(1 << 30)
                    state = crash_state(base, ops, window, random.Random(seed), tear=case.sector)
                    where = f"{case.name}: crash writing {name} (step {k}), window {window} (seed {seed})"
                    folder.lay_out(current, name, state)
                    assert content(scratch / case.top) == expected, where
                    tried += 1
                    if (j == 0 and (window + k) % 2 == 0) or rng.random() < RERUN_SHARE:
                        _complete(case, scratch, expected, where, qemu=reruns % 4 == 0)
                        folder.touched()
                        reruns += 1
            current[name] = bytes(rec.file.data)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{case.name}: {len(recorder.recordings)} files written, {spans} windows, {tried} crash states, {reruns} completed")
    assert tried >= states and reruns > 0


class Folder:
    """The scratch folder holding one crash state; only files that differ are rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.laid: dict[str, object] = {}  # file name -> the bytes object last written there

    def lay_out(self, files: dict[str, bytes], name: str, state: bytes | bytearray) -> None:
        wanted: dict[str, object] = {n: (state if n == name else data) for n, data in files.items()}
        for f in self.path.iterdir():
            if f.name not in wanted:
                f.unlink()
        for n, data in wanted.items():
            if self.laid.get(n) is not data or not (self.path / n).exists():
                (self.path / n).write_bytes(data)  # type: ignore[arg-type]
                self.laid[n] = data

    def touched(self) -> None:
        """The files were changed behind our back (an operation ran): rewrite them all next time."""
        self.laid.clear()


def _complete(case: Case, folder: Path, expected: bytes, where: str, *, qemu: bool) -> None:
    case.finish(folder)
    for n in case.gone:
        assert not (folder / n).exists(), f"{where}: {n} left after completing"
    top = case.top if case.top not in case.gone else case.names[0]
    assert content(folder / top) == expected, f"{where}: wrong content after completing"
    for n in case.names:
        if n in case.gone:
            continue
        report = check(folder / n)
        assert report.corruptions == 0, f"{where}: {n}: {report}"
        with vhdx.open(folder / n) as d:
            assert d.info().log_state == "empty", where
    if qemu and case.qemu_target:
        _qemu_check(folder / case.qemu_target)
