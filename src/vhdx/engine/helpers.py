"""Helper threads that run pieces of one large read at the same time as the caller.

One ``preadv`` copies from the page cache on one CPU, and asks the device for one range at a
time. Splitting a large read into pieces read at once by the caller and by helper threads uses
a second CPU for the copy and keeps more than one request in flight. Measured on a 2-CPU
machine, a 1 GiB file in the page cache, bare ``os.preadv`` split in two: 1 MiB requests
1.1-1.3x faster, 4 MiB 1.3-1.6x, and 1.7-2.5x with the cache dropped; through ``vhdx.open``
(benchmarks/compare_read.py) 1 MiB ``readinto`` calls gained 1.07-1.13x and 32 MiB ones 1.5x.
Handing a piece to a helper and waiting for it costs 15-20 microseconds, so pieces are never
smaller than ``READ_SPLIT_MIN_PIECE`` (with 512 KiB requests split in two the handoff already
cost more than the second CPU saved).

Only the calling thread ever waits here, and helpers never wait on anything but their queue, so
nothing can deadlock. ``configure(0)`` turns the helpers off for the process (a process pool
that already keeps every CPU busy gains nothing from them); ``reads_not_split()`` for one thread
(a pipeline whose other stage already uses the second CPU: convert's reader lost 3-8 % to the
split on 2 CPUs).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..constants import MAX_READ_HELPERS


class Task:
    """One call handed to a helper; ``wait`` returns its result or raises its exception."""

    __slots__ = ("fn", "args", "result", "error", "_done")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as err:  # handed to the waiting caller, which re-raises it
            self.error = err
        finally:
            # Drop the arguments before signalling: they hold views of the caller's buffer, and a
            # live view would stop the caller from resizing it (BufferError) once the read returns.
            self.fn = self.args = None  # type: ignore[assignment]
            self._done.release()

    def wait(self) -> Any:
        """Block until the task has run, even through KeyboardInterrupt: a helper may still be
        writing into the caller's buffer, so the caller must not return before it is done."""
        interrupted: BaseException | None = None
        while True:
            try:
                self._done.acquire()
                break
            except BaseException as err:  # noqa: PERF203 - retried on purpose, re-raised below
                interrupted = err
        if interrupted is not None:
            raise interrupted
        if self.error is not None:
            raise self.error
        return self.result


def _default_count() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))  # the CPUs this process may run on (containers, taskset)
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(0, min(cpus - 1, MAX_READ_HELPERS))


class _Helpers:
    """Daemon threads started on first use, fed from one queue."""

    def __init__(self) -> None:
        self.count = _default_count()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Task] = queue.SimpleQueue()
        self._started = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> Task:
        if self._started < self.count:
            self._start()
        task = Task(fn, args)
        self._queue.put(task)
        return task

    def _start(self) -> None:
        with self._lock:
            while self._started < self.count:
                threading.Thread(target=self._serve, args=(self._queue,), name=f"vhdx-read-{self._started}",
                                 daemon=True).start()
                self._started += 1

    @staticmethod
    def _serve(tasks: queue.SimpleQueue[Task]) -> None:
        while True:
            tasks.get().run()

    def reset_after_fork(self) -> None:
        # A forked child has the parent's counters but none of its threads.
        self._lock = threading.Lock()
        self._queue = queue.SimpleQueue()
        self._started = 0


_HELPERS = _Helpers()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_HELPERS.reset_after_fork)


_THREAD = threading.local()


def count() -> int:
    """How many helper threads a read on this thread may use besides it (0: reads are not split)."""
    return 0 if getattr(_THREAD, "not_split", False) else _HELPERS.count


@contextmanager
def reads_not_split() -> Iterator[None]:
    """Within this block, reads made by the current thread are not split (other threads' are)."""
    before = getattr(_THREAD, "not_split", False)
    _THREAD.not_split = True
    try:
        yield
    finally:
        _THREAD.not_split = before


def configure(helpers: int) -> None:
    """Use ``helpers`` helper threads from now on (0 turns splitting off).

    Threads already started stay idle when the count goes down.
    """
    if helpers < 0:
        raise ValueError(f"helper count must be >= 0, not {helpers}")
    _HELPERS.count = min(helpers, MAX_READ_HELPERS)


def submit(fn: Callable[..., Any], *args: Any) -> Task:
    """Run ``fn(*args)`` on a helper thread; call ``wait()`` on the result before returning."""
    return _HELPERS.submit(fn, *args)
