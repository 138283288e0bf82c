"""The invariant every fuzzer checks, and the read and write surfaces it is checked on.

Invariant (h11's, ARCHITECTURE.md convention 12): whatever a file contains, every entry point
either works or raises a ``vhdx.VhdxError`` subclass. Never another exception (``KeyError``,
``IndexError``, ``struct.error``, ``ConstructError``, ``ZeroDivisionError``, ``OverflowError``,
``MemoryError``, ``ValueError`` from numpy, ...), never a hang, and never an allocation far beyond
what the file can justify: ``MEMORY_BASE + MEMORY_PER_FILE_BYTE * file size + MEMORY_PER_BAT_BYTE
* the BAT its declared geometry needs`` (README "Limits": opening reads the whole BAT, so a
64 TiB geometry may cost its BAT several times over while it is validated; anything else must
scale with the bytes actually there). A write surface run on an in-memory RecordingFile also
gets ``MEMORY_PER_RECORDED_GROWTH_BYTE`` per byte that file grew by: that copy is the test's.

``read_surface`` opens, reads (everything for small disks; the first, last and a few random
blocks of large ones), maps, describes, lists partitions, checks and runs the forensic scans.
``write_surface`` opens read-write, writes, flushes, closes, and reports what happened so the
caller can check the file afterwards. ``guarded`` runs either under a watchdog (SIGALRM) and
``tracemalloc``.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import vhdx
from vhdx.constants import BAT_ENTRY_SIZE, MiB
from vhdx.ops import check
from vhdx.ops.forensics import find_hidden, log_history
from vhdx.ops.partitions import list_partitions

MEMORY_BASE = 64 * MiB
MEMORY_PER_FILE_BYTE = 32
MEMORY_PER_BAT_BYTE = 4
# A write surface run on an in-memory RecordingFile (tests/crash/recording.py) grows that file
# when the writer allocates; the test's own copy of the new bytes is not the library's memory.
# Extending it costs its bytearray (with over-allocation) and the temporary that extended it.
MEMORY_PER_RECORDED_GROWTH_BYTE = 3
FULL_READ_LIMIT = 64 * MiB  # disks up to this size are read whole
SAMPLED_BLOCKS = 6  # random blocks read from larger disks
EXTENT_LIMIT = 200_000  # extents examined (a 64 TiB disk of alternating blocks has millions)
DEFAULT_TIMEOUT = 30.0  # seconds per input; generous, since the machine is shared


class Hang(Exception):  # noqa: N818 - it is what it reports
    """The watchdog fired: an input kept an entry point busy past the timeout."""


class MemoryBlowup(AssertionError):  # noqa: N818
    """An input made the library allocate more than the bound allows."""


@dataclass
class Outcome:
    """What happened to one input: which steps worked, which raised which VhdxError."""

    steps: dict[str, str] = field(default_factory=dict)  # step -> "ok" or the VhdxError class name
    peak_memory: int = 0
    bound: int = 0

    def record(self, step: str, result: str) -> None:
        self.steps[step] = result


@contextlib.contextmanager
def watchdog(seconds: float) -> Iterator[None]:
    """Raise ``Hang`` in the main thread if the block runs longer than ``seconds``.

    Uses SIGALRM (ITIMER_REAL), so it interrupts pure-Python loops; outside the main thread, or
    where SIGALRM does not exist, it does nothing (the caller's own time budget then applies).
    """
    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: object) -> None:
        raise Hang(f"an entry point ran longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def declared_bat_bytes(path: Path) -> int:
    """Bytes of the BAT the image's declared geometry needs (0 when it cannot be decoded)."""
    from craft import read_layout  # tests/ is on sys.path

    try:
        layout = read_layout(path)
    except Exception:  # noqa: BLE001 - any undecodable image declares nothing
        return 0
    return min(layout.geometry.bat_entry_count_full * BAT_ENTRY_SIZE, layout.region_table.bat.length)


def memory_bound(files: list[Path]) -> int:
    size = sum(p.stat().st_size for p in files if p.exists())
    bat = sum(declared_bat_bytes(p) for p in files if p.exists())
    return MEMORY_BASE + MEMORY_PER_FILE_BYTE * size + MEMORY_PER_BAT_BYTE * bat


def step(outcome: Outcome, name: str, fn: Callable[[], Any]) -> Any:
    """Run one entry point: a VhdxError is an accepted answer, anything else propagates."""
    try:
        result = fn()
    except vhdx.VhdxError as err:
        outcome.record(name, type(err).__name__)
        return None
    outcome.record(name, "ok")
    return result


def guarded(run: Callable[[Outcome], None], files: list[Path], *, timeout: float = DEFAULT_TIMEOUT,
            recording: Any = None) -> Outcome:
    """Run ``run`` under the watchdog and tracemalloc; raise if it hangs or allocates past the bound.

    ``recording``: the RecordingFile the run writes to, if any; what it grew by is the test's
    memory and is added to the bound (``MEMORY_PER_RECORDED_GROWTH_BYTE``).
    """
    outcome = Outcome(bound=memory_bound(files))
    start_size = len(recording.data) if recording is not None else 0
    tracemalloc.start()
    try:
        with watchdog(timeout):
            run(outcome)
        outcome.peak_memory = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    if recording is not None:
        outcome.bound += MEMORY_PER_RECORDED_GROWTH_BYTE * max(0, len(recording.data) - start_size)
    if outcome.peak_memory > outcome.bound:
        raise MemoryBlowup(f"peak traced memory {outcome.peak_memory} is over the bound {outcome.bound} "
                           f"(steps: {outcome.steps})")
    return outcome


# --- the read surface ----------------------------------------------------------------------------


def _read_all_or_sample(disk: vhdx.VirtualDisk, seed: int) -> None:
    size, bs = disk.size, disk.block_size
    if size <= FULL_READ_LIMIT:
        buf = bytearray(MiB)
        disk.seek(0)
        while disk.readinto(buf):
            pass
    else:
        rng = random.Random(seed)
        blocks = {0, max(0, (size - 1) // bs)} | {rng.randrange(0, max(1, size // bs)) for _ in range(SAMPLED_BLOCKS)}
        for block in sorted(blocks):
            disk.pread(block * bs, min(MiB, bs))
    # Unaligned reads, at the edges too.
    disk.pread(max(0, size - 1), 10)
    disk.pread(min(size, 12345), 7777)


def _walk_extents(disk: vhdx.VirtualDisk) -> None:
    """Extents must be ordered, contiguous and inside the disk, whatever the BAT says."""
    pos = 0
    for i, e in enumerate(disk.extents()):
        assert e.virtual_offset == pos and e.length > 0, f"extent {i} {e} does not follow {pos}"
        pos = e.end
        assert pos <= disk.size, f"extent {e} passes the end of the disk"
        if i >= EXTENT_LIMIT:
            return
    assert pos == disk.size, f"extents stop at {pos}, the disk is {disk.size}"


def read_surface(opens: Path, target: Path, outcome: Outcome) -> None:
    """Every read-only entry point on the image ``opens`` (whose folder holds its parents);
    ``target`` is the file that was mutated (the forensic scans look at it directly)."""
    folder = opens.parent
    seed = zlib.crc32(str(target).encode())

    def use_disk() -> None:
        with vhdx.open(opens, parent_search=[folder]) as disk:
            step(outcome, "info", lambda: disk.info().to_dict())
            step(outcome, "extents", lambda: _walk_extents(disk))
            step(outcome, "read", lambda: _read_all_or_sample(disk, seed))
            step(outcome, "partitions", lambda: list_partitions(disk))

    step(outcome, "open", use_disk)

    def use_inspection_open() -> None:
        with vhdx.open(opens, parent_search=[folder], require_parent=False) as disk:
            disk.info()
            _walk_extents(disk)

    if outcome.steps.get("open") == "ParentNotFoundError":
        step(outcome, "open without parent", use_inspection_open)
    step(outcome, "check", lambda: check(opens, parent_search=[folder]).to_dict())
    step(outcome, "find_hidden", lambda: find_hidden(target))
    step(outcome, "log_history", lambda: log_history(target))


# --- the write surface ---------------------------------------------------------------------------

WRITES = ((0, b"W" * 700), (MiB - 300, b"X" * 5000), (3 * MiB + 512, b"Y" * 512))


@dataclass
class WriteResult:
    """What the write surface did: whether the writable open and the writes were accepted, and
    the (offset, bytes) written, to be read back."""

    opened: bool = False
    written: list[tuple[int, bytes]] = field(default_factory=list)
    error: str | None = None


def write_surface(opens: Path, result: WriteResult, outcome: Outcome, *, source: Any = None) -> None:
    """Open read-write (through ``source``, a file object, when given), write a few ranges that
    cross block edges, zero one, flush, close."""
    folder = opens.parent

    def run() -> None:
        with vhdx.open(source if source is not None else opens, "r+b", parent_search=[folder]) as disk:
            result.opened = True
            for offset, data in WRITES:
                if offset + len(data) <= disk.size:
                    disk.pwrite(offset, data)
                    result.written.append((offset, data))
            disk.flush()
            if disk.size >= 2 * MiB + 4096:
                disk.write_zeroes(2 * MiB, 4096)
                result.written.append((2 * MiB, bytes(4096)))

    try:
        run()
        outcome.record("write", "ok")
    except vhdx.VhdxError as err:
        result.error = type(err).__name__
        outcome.record("write", result.error)
