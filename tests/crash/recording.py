"""A recording in-memory file and the crash states that can be built from its recording.

``RecordingFile`` is a seekable binary file held in memory that logs every write, every
truncate and every ``flush()`` (which the library's file-object source calls exactly where it
syncs: a write barrier). From such a log, ``crash_state`` builds what a disk could hold after a
power cut: everything before some barrier, plus any subset of the writes issued after it (until
the next barrier), applied in any order, each possibly torn at ``tear`` granularity (512 bytes:
a partially written 4 KiB sector).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field


@dataclass
class Write:
    offset: int
    data: bytes


@dataclass
class Truncate:
    size: int


@dataclass
class Barrier:
    pass


Op = Write | Truncate | Barrier


class RecordingFile(io.RawIOBase):
    """A bytearray-backed binary file that records writes, truncates and barriers."""

    def __init__(self, initial: bytes, name: str = "<recording>") -> None:
        super().__init__()
        self.data = bytearray(initial)
        self.ops: list[Op] = []
        self.name = name
        self._pos = 0

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self.data)}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        chunk = self.data[self._pos : self._pos + len(view)]
        view[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def write(self, b: bytes) -> int:  # type: ignore[override]
        data = bytes(b)
        end = self._pos + len(data)
        if end > len(self.data):
            self.data.extend(bytes(end - len(self.data)))
        self.data[self._pos : end] = data
        self.ops.append(Write(self._pos, data))
        self._pos = end
        return len(data)

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data.extend(bytes(size - len(self.data)))
        self.ops.append(Truncate(size))
        return size

    def flush(self) -> None:
        if not self.closed:
            self.ops.append(Barrier())

    def close(self) -> None:
        # Closing is not a barrier; the library syncs explicitly before it stops writing.
        io.RawIOBase.close(self)

    def barrier_count(self) -> int:
        return sum(isinstance(op, Barrier) for op in self.ops)


def _apply(image: bytearray, op: Op) -> None:
    if isinstance(op, Write):
        end = op.offset + len(op.data)
        if end > len(image):
            image.extend(bytes(end - len(image)))
        image[op.offset : end] = op.data
    elif isinstance(op, Truncate):
        if op.size < len(image):
            del image[op.size :]
        else:
            image.extend(bytes(op.size - len(image)))


@dataclass
class CrashPlan:
    """Where to cut a recording: after barrier ``barrier`` (0 = before the first), plus which
    in-flight ops land and how."""

    barrier: int
    seed: int
    description: str = field(default="")


def windows(ops: list[Op]) -> list[tuple[int, int]]:
    """(start, end) op index ranges between consecutive barriers: window k holds the ops issued
    after barrier k (0 = from the start) and before barrier k + 1."""
    result = []
    start = 0
    for i, op in enumerate(ops):
        if isinstance(op, Barrier):
            result.append((start, i))
            start = i + 1
    result.append((start, len(ops)))
    return result


def window_bases(initial: bytes, ops: list[Op]):
    """Yield (window index, file contents before the window's ops) for every window, in order,
    building each from the previous one (one pass over the recording)."""
    image = bytearray(initial)
    for k, (start, end) in enumerate(windows(ops)):
        yield k, image
        for op in ops[start:end]:
            _apply(image, op)
        if end < len(ops):
            pass  # the barrier itself changes nothing


def crash_state(base: bytes | bytearray, ops: list[Op], window: int, rng: random.Random, *, tear: int = 512) -> bytearray:
    """Build the file as it could be after a crash during ``window``, from ``base`` (the file with
    every op of the earlier windows applied, see ``window_bases``).

    Of the window's ops, a random subset lands in a random order; a landing write lands whole or
    torn (a random subset of its ``tear``-sized pieces); a truncate lands or not.
    """
    start, end = windows(ops)[window]
    image = bytearray(base)
    inflight = [op for op in ops[start:end] if not isinstance(op, Barrier)]
    rng.shuffle(inflight)
    mode = rng.random()
    for op in inflight:
        if mode < 0.15:
            landing = True  # everything landed, in some order
        elif mode < 0.3:
            landing = False  # nothing landed
        else:
            landing = rng.random() < 0.5
        if not landing:
            continue
        if isinstance(op, Write) and len(op.data) > tear and rng.random() < 0.5:
            first = (op.offset // tear) * tear
            for piece_start in range(first, op.offset + len(op.data), tear):
                lo, hi = max(piece_start, op.offset), min(piece_start + tear, op.offset + len(op.data))
                if rng.random() < 0.5:
                    _apply(image, Write(lo, op.data[lo - op.offset : hi - op.offset]))
        else:
            _apply(image, op)
    return image
