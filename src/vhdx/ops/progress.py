"""The progress protocol shared by long operations.

An operation takes ``progress: ProgressCallback | None`` and calls it with a ``Progress`` as work
advances (at most a few times per second of work is the convention; callers must not rely on a
particular rate). The CLI turns these calls into a progress bar; libraries can log them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Progress:
    """How far an operation is.

    Attributes:
        operation: a short name (``"convert"``, ``"check"``, ...).
        done: units done so far.
        total: units in all (None when unknown, e.g. reading from a pipe).
        unit: what is counted (``"bytes"`` unless said otherwise).
    """

    operation: str
    done: int
    total: int | None
    unit: str = "bytes"

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


ProgressCallback = Callable[[Progress], None]


def report(callback: ProgressCallback | None, operation: str, done: int, total: int | None, unit: str = "bytes") -> None:
    """Call ``callback`` if there is one."""
    if callback is not None:
        callback(Progress(operation, done, total, unit))


class ProgressReporter:
    """Throttles progress calls for a long operation, so every operation reports alike.

    The first call (``start``) and the last (``finish``) always reach the callback; in between,
    ``advance``/``update`` forward at most one call per ``interval`` seconds (the convention above:
    a few per second), so a loop may call them once per chunk without thought for their cost.

    Args:
        callback: where reports go (None: every method does nothing, cheaply).
        operation: the short name put in every ``Progress``.
        total: units in all (None when unknown).
        unit: what is counted.
        interval: least seconds between two forwarded reports.
    """

    def __init__(self, callback: ProgressCallback | None, operation: str, total: int | None, unit: str = "bytes",
                 *, interval: float = 0.2) -> None:
        self._clock = time.monotonic
        self.callback = callback
        self.operation = operation
        self.total = total
        self.unit = unit
        self.interval = interval
        self.done = 0
        self._last = float("-inf")

    def start(self) -> None:
        """Report that the operation (or a new phase of it, with a new ``total``) begins: done = 0."""
        self.done = 0
        self._emit(force=True)

    def advance(self, amount: int) -> None:
        """Count ``amount`` more units done."""
        self.done += amount
        self._emit(force=False)

    def update(self, done: int) -> None:
        """Set the units done so far."""
        self.done = done
        self._emit(force=False)

    def finish(self, total: int | None = None) -> None:
        """Report the end; ``total`` fixes an unknown (or changed) total to the final count."""
        if total is not None:
            self.total = total
            self.done = total
        elif self.total is not None:
            self.done = self.total
        self._emit(force=True)

    def _emit(self, *, force: bool) -> None:
        if self.callback is None:
            return
        now = self._clock()
        if force or now - self._last >= self.interval:
            self._last = now
            self.callback(Progress(self.operation, self.done, self.total, self.unit))
