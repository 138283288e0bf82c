"""Random write workloads run against a RecordingFile, with a model of what was acknowledged."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import vhdx

from .recording import Barrier, RecordingFile


@dataclass
class Event:
    """One API call of the workload and where it sits in the recording."""

    kind: str  # "write", "zeroes", "discard", "flush", "close", "open"
    offset: int = 0
    length: int = 0
    first_op: int = 0  # index of the first recorded op at or after the call's start
    barriers_after: int = 0  # barriers recorded when the call returned
    after: bytes = b""  # for data-changing events: the touched sectors' contents afterwards


@dataclass
class Recording:
    initial_file: bytes
    initial_disk: bytes
    events: list[Event]
    snapshots: dict[int, bytes]  # event index of each completed flush/close -> disk contents
    rec: RecordingFile
    sector_size: int
    disk_size: int
    parent: str | None = None
    final_disk: bytes = b""
    meta: dict[str, object] = field(default_factory=dict)


def run_workload(image: Path, rng: random.Random, *, steps: int, parent: str | None = None,
                 max_write: int = 96 * 1024) -> Recording:
    """Open ``image`` (already created) through a RecordingFile and drive random API calls."""
    initial = image.read_bytes()
    rec = RecordingFile(initial, name=str(image))
    disk = vhdx.open(rec, "r+b", parent=parent)
    size = disk.size
    ss = disk.logical_sector_size
    model = bytearray(disk.read())
    disk.seek(0)
    initial_disk = bytes(model)
    events: list[Event] = []
    snapshots: dict[int, bytes] = {}

    def record(kind: str, offset: int = 0, length: int = 0) -> Event:
        e = Event(kind, offset, length, first_op=len(rec.ops))
        events.append(e)
        return e

    def touched(offset: int, length: int) -> bytes:
        lo = (offset // ss) * ss
        hi = -(-(offset + length) // ss) * ss
        return bytes(model[lo:hi])

    for _ in range(steps):
        r = rng.random()
        if r < 0.6:
            if rng.random() < 0.7:
                length = rng.randrange(1, max_write // ss + 1) * ss
                offset = rng.randrange(0, (size - length) // ss + 1) * ss
            else:  # unaligned: read-modify-write at sector edges
                length = rng.randrange(1, max_write)
                offset = rng.randrange(0, size - length + 1)
            data = rng.randbytes(length)
            e = record("write", offset, length)
            disk.seek(offset)
            disk.write(data)
            model[offset : offset + length] = data
            e.after = touched(offset, length)
        elif r < 0.7:
            length = rng.randrange(1, 3 * disk.block_size // ss) * ss
            offset = rng.randrange(0, (size - length) // ss + 1) * ss
            e = record("zeroes", offset, length)
            disk.write_zeroes(offset, length)
            model[offset : offset + length] = bytes(length)
            e.after = touched(offset, length)
        elif r < 0.75:
            length = rng.randrange(1, 3 * disk.block_size // ss) * ss
            offset = rng.randrange(0, (size - length) // ss + 1) * ss
            e = record("discard", offset, length)
            disk.discard(offset, length)
            # Discarded ranges read as zeros or keep their data; the engine decides per block.
            disk_now = disk.pread(offset, length)
            model[offset : offset + length] = disk_now
            e.after = touched(offset, length)
        elif r < 0.93:
            e = record("flush")
            disk.flush()
            snapshots[len(events) - 1] = bytes(model)
        else:
            e = record("close")
            disk.close()
            snapshots[len(events) - 1] = bytes(model)
            disk = vhdx.open(rec, "r+b", parent=parent)  # the same recording continues
        e.barriers_after = rec.barrier_count()
    e = record("close")
    disk.close()
    e.barriers_after = rec.barrier_count()
    snapshots[len(events) - 1] = bytes(model)
    return Recording(initial, initial_disk, events, snapshots, rec, ss, size, parent, bytes(model))


def expected_for_window(recording: Recording, window: int, end_op: int) -> tuple[bytes, list[Event]]:
    """The acknowledged contents for a crash in ``window`` and the later events that may show.

    A flush (or close) is acknowledged when every barrier it issued precedes the crash window;
    events that started after the window's last op cannot have left a trace.
    """
    ack_index = -1
    for i, e in enumerate(recording.events):
        if e.kind in ("flush", "close") and e.barriers_after <= window:
            ack_index = i
    ack = recording.snapshots[ack_index] if ack_index >= 0 else recording.initial_disk
    later = [e for e in recording.events[ack_index + 1 :]
             if e.kind in ("write", "zeroes", "discard") and e.first_op <= end_op]
    return ack, later


def check_contents(actual: bytes, ack: bytes, later: list[Event], sector_size: int) -> str | None:
    """None if every sector holds its acknowledged contents or a version some later event wrote
    (byte-wise for sectors that unaligned writes shared); else a description of the first bad one."""
    if actual == ack:
        return None
    a = np.frombuffer(actual, dtype=np.uint8).reshape(-1, sector_size)
    b = np.frombuffer(ack, dtype=np.uint8).reshape(-1, sector_size)
    bad = np.flatnonzero((a != b).any(axis=1))
    for s in bad.tolist():
        lo = s * sector_size
        got = actual[lo : lo + sector_size]
        versions = [ack[lo : lo + sector_size]]
        for e in later:
            e_lo = (e.offset // sector_size) * sector_size
            if e_lo <= lo < e_lo + len(e.after):
                versions.append(e.after[lo - e_lo : lo - e_lo + sector_size])
        if got in versions:
            continue
        # Bytes of a sector shared by several unaligned writes may come from different versions.
        stacked = np.frombuffer(b"".join(versions), dtype=np.uint8).reshape(len(versions), sector_size)
        g = np.frombuffer(got, dtype=np.uint8)
        if len(versions) > 1 and ((stacked == g).any(axis=0)).all():
            continue
        return (f"sector {s} (virtual 0x{lo:x}) holds neither its acknowledged contents nor any later version "
                f"({len(versions) - 1} later versions)")
    return None


def barrier_positions(rec: RecordingFile) -> list[int]:
    return [i for i, op in enumerate(rec.ops) if isinstance(op, Barrier)]
