"""A progress display on stderr for long operations, fed by ``vhdx.ops`` progress callbacks.

Commands add ``@progress_option`` (``--progress/--no-progress``; by default on only when stderr is
a terminal) and wrap the operation in ``with progress_callback(enabled, "label") as callback:``,
passing ``callback`` (None when disabled) as the operation's ``progress=`` argument. On a terminal
the line is redrawn in place; when forced on elsewhere (a log file), a plain line is printed at
most every few seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO, TypeVar

import click

from vhdx._units import format_size
from vhdx.ops.progress import Progress, ProgressCallback

F = TypeVar("F", bound=Callable[..., Any])

BAR_WIDTH = 28
TTY_INTERVAL = 0.1  # seconds between redraws on a terminal
LOG_INTERVAL = 5.0  # seconds between lines when the output is not a terminal


def progress_option(function: F) -> F:
    """Add ``--progress/--no-progress`` (default: on when stderr is a terminal)."""
    return click.option(
        "--progress/--no-progress",
        "show_progress",
        default=None,
        help="Show a progress bar on stderr (default: only when stderr is a terminal).",
    )(function)


def _amount(value: int, unit: str) -> str:
    return format_size(value) if unit == "bytes" else f"{value} {unit}"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar:
    """A ``ProgressCallback`` that draws one status line on ``stream`` (stderr by default).

    Args:
        label: what is being done (``"converting"``).
        stream: where to draw (stderr unless given).
        tty: redraw in place (True) or print plain lines (False); by default whether ``stream``
            is a terminal.
    """

    def __init__(self, label: str, *, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._started = time.monotonic()
        self._last_draw = float("-inf")
        self._width = 0  # length of the line drawn last (to blank out its tail)
        self._last: Progress | None = None

    def __call__(self, progress: Progress) -> None:
        self._last = progress
        now = time.monotonic()
        final = progress.total is not None and progress.done >= progress.total
        if not final and now - self._last_draw < (TTY_INTERVAL if self.tty else LOG_INTERVAL):
            return
        self._last_draw = now
        self._draw(self.render(progress, now - self._started))

    def render(self, progress: Progress, elapsed: float) -> str:
        """The status line for ``progress`` after ``elapsed`` seconds."""
        done = _amount(progress.done, progress.unit)
        rate = f"{format_size(int(progress.done / elapsed))}/s" if elapsed > 0 and progress.unit == "bytes" else ""
        fraction = progress.fraction
        if fraction is None:
            return " ".join(p for p in (f"{self.label}:", done, rate) if p)
        filled = int(fraction * BAR_WIDTH)
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        total = _amount(progress.total or 0, progress.unit)
        eta = ""
        if 0 < fraction < 1 and elapsed > 0:
            eta = f"ETA {_duration(elapsed * (1 - fraction) / fraction)}"
        elif fraction >= 1:
            eta = f"in {_duration(elapsed)}"
        parts = (f"{self.label}: {fraction * 100:5.1f}% [{bar}]", f"{done} / {total}", rate, eta)
        return " ".join(p for p in parts if p)

    def _draw(self, line: str) -> None:
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the display: the last state stays visible, followed by a newline on a terminal."""
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


@contextmanager
def progress_callback(enabled: bool | None, label: str) -> Iterator[ProgressCallback | None]:
    """Yield a progress callback for an operation (None when the display is off).

    Args:
        enabled: the ``--progress/--no-progress`` value; None means "when stderr is a terminal".
        label: what is being done, shown at the start of the line.
    """
    stderr = sys.stderr
    if enabled is None:
        enabled = stderr.isatty()
    if not enabled:
        yield None
        return
    bar = ProgressBar(label, stream=stderr)
    try:
        yield bar
    finally:
        bar.close()


__all__ = ["ProgressBar", "progress_callback", "progress_option"]
