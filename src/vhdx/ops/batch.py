"""Fleet batch jobs: ``info``, ``hash``, ``check`` or ``convert`` many images in parallel.

The task functions (``info_task``, ``hash_task``, ``check_task``, ``convert_task``,
``hash_range_task``) take one image (a path or an fsspec URL) and return a JSON-ready record; they
never raise for a problem with the image: it is recorded (``"ok": false`` and a one-line
``"error"``), so one bad image never stops the others.

``run_batch`` expands the inputs (globs, folders, URLs), skips the images already recorded as done
in its JSON Lines output (so an interrupted job resumes where it stopped), runs the rest in a local
process pool or on a Dask cluster, and appends one line per image as results arrive (flushed
after each line).

Split hashing. ``hash`` with ``split`` (a byte count, a multiple of 1 MiB) cuts each image's virtual
disk into ranges of that size (the last may be shorter), hashes each range with SHA-256 as a task
of its own (so several workers share one large image) and combines them in a one-level hash tree::

    range digest i = sha256(bytes [i * split, min((i + 1) * split, size)))
    sha256-tree    = sha256(range digest 0 || range digest 1 || ...)   (the 32-byte digests)

The tree root is not the SHA-256 of the disk and cannot be turned into it: a plain SHA-256 needs
the bytes in one sequence. Images no larger than one range are hashed whole and their record has
both the plain ``sha256`` and the tree (of their single range).
"""

from __future__ import annotations

import collections
import contextlib
import glob
import hashlib
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from ..constants import MiB
from ..disk import open as open_disk
from ..engine import helpers
from ..engine.buffers import io_buffer
from ..engine.source import is_url
from ..errors import UnsupportedError, VhdxError
from .check import check
from .convert import convert
from .hashing import check_algorithms, hash_disk
from .progress import ProgressCallback, ProgressReporter
from .result import OperationResult

ACTIONS = ("info", "hash", "check", "convert")
SPLIT_ALIGNMENT = 1 * MiB  # split ranges are whole MiB (they then cover whole sectors of any disk)
DEFAULT_SPLIT = 256 * MiB
_RANGE_CHUNK = 8 * MiB  # bytes read per step when hashing a range
_IMAGE_SUFFIXES = (".vhdx", ".avhdx")
_GLOB_CHARS = frozenset("*?[")
# Times a task may be lost with a crashed worker process before its image is recorded as failed.
_MAX_ATTEMPTS = 2


# --- one image ------------------------------------------------------------------------------------


def describe_error(err: BaseException) -> str:
    """One line saying what went wrong (``path: reason`` for operating-system errors)."""
    if isinstance(err, OSError) and not isinstance(err, VhdxError) and err.strerror:
        names = [os.fsdecode(n) for n in (err.filename, err.filename2) if n is not None]
        text = ": ".join([*names, err.strerror])
    else:
        text = str(err) or type(err).__name__
        if not isinstance(err, (VhdxError, OSError, ValueError)):
            text = f"{type(err).__name__}: {text}"
    return " ".join(text.split())


def _kebab(d: dict[str, Any]) -> dict[str, Any]:
    return {k.replace("_", "-"): v for k, v in d.items()}


def _record(action: str, image: str, work: Callable[[], tuple[bool, str | None, dict[str, Any]]]) -> dict[str, Any]:
    started = time.perf_counter()
    record: dict[str, Any] = {"image": image, "action": action, "ok": False, "error": None}
    try:
        ok, error, result = work()
        record["ok"], record["error"], record["result"] = ok, error, result
    except Exception as err:  # noqa: BLE001 - one image's failure is recorded, never raised
        record["error"] = describe_error(err)
    record["seconds"] = round(time.perf_counter() - started, 6)
    return record


def info_task(image: str, *, parent_search: Sequence[str] = ()) -> dict[str, Any]:
    """Record of ``vhdx info`` for ``image``: the ``DiskInfo`` fields (kebab-case), its chain, and
    for a URL what reading it cost (``remote``)."""

    def work() -> tuple[bool, str | None, dict[str, Any]]:
        with open_disk(image, parent_search=tuple(parent_search), require_parent=False) as disk:
            info = disk.info().to_dict()
            result = _kebab(info)
            result["chain"] = [_kebab(c) for c in info["chain"]]
            remote = disk.remote_stats()
            if remote is not None:
                result["remote"] = _kebab(remote)
        return True, None, result

    return _record("info", image, work)


def tree_root(range_digests: Sequence[str]) -> str:
    """Root of the one-level hash tree: SHA-256 over the concatenated (binary) range digests."""
    h = hashlib.sha256()
    for d in range_digests:
        h.update(bytes.fromhex(d))
    return h.hexdigest()


def split_ranges(size: int, split: int) -> list[tuple[int, int]]:
    """(start, length) of each range of a ``size``-byte disk cut every ``split`` bytes."""
    return [(start, min(split, size - start)) for start in range(0, size, split)] or [(0, 0)]


def check_split(split: int) -> int:
    """Validate a split range size (a positive multiple of 1 MiB)."""
    if split <= 0 or split % SPLIT_ALIGNMENT:
        raise ValueError(f"the split size must be a positive multiple of 1 MiB, not {split}")
    return split


def _hash_range(disk: Any, start: int, length: int) -> str:
    h = hashlib.sha256()
    view = io_buffer(min(_RANGE_CHUNK, max(length, 1)))
    pos, end = start, start + length
    while pos < end:
        n = min(len(view), end - pos)
        disk.seek(pos)
        got = disk.readinto(view[:n])
        if got != n:
            raise VhdxError(f"short read at virtual offset {pos}", image=disk.name)
        h.update(view[:n])
        pos += n
    return h.hexdigest()


def hash_task(image: str, *, algorithms: Sequence[str] = ("sha256",), split: int | None = None,
              parent_search: Sequence[str] = ()) -> dict[str, Any]:
    """Record of the digests of ``image``'s virtual disk (``result.digests``).

    With ``split``, the one-level hash tree of the module docstring is computed too
    (``result.sha256-tree``, ``result.ranges``, ``result.range-size``), here in this process; only a
    disk no larger than one range also gets its plain digests. ``run_batch`` spreads the ranges of
    a large image over several workers instead.
    """
    names = check_algorithms(list(algorithms))

    def work() -> tuple[bool, str | None, dict[str, Any]]:
        with open_disk(image, parent_search=tuple(parent_search)) as disk:
            if split is None or disk.size <= split:
                result = hash_disk(disk, names)
                out: dict[str, Any] = {"virtual-size": result.virtual_size, "digests": dict(result.digests),
                                       "bytes-read": result.bytes_read}
                if split is not None:
                    out.update({"range-size": split, "ranges": [result.digests["sha256"]],
                                "sha256-tree": tree_root([result.digests["sha256"]])})
                return True, None, out
            digests = [_hash_range(disk, start, length) for start, length in split_ranges(disk.size, split)]
            return True, None, _split_result(disk.size, split, digests)

    if split is not None:
        check_split(split)
        if names != ("sha256",):
            raise ValueError("split hashing computes SHA-256 only (the tree is defined over SHA-256 digests)")
    return _record("hash", image, work)


def _split_result(size: int, split: int, digests: list[str]) -> dict[str, Any]:
    return {"virtual-size": size, "digests": {}, "bytes-read": size, "range-size": split, "ranges": digests,
            "sha256-tree": tree_root(digests)}


def hash_range_task(image: str, start: int, length: int, *, parent_search: Sequence[str] = ()) -> dict[str, Any]:
    """SHA-256 of virtual bytes [start, start + length) of ``image`` (one range of a split hash)."""

    def work() -> tuple[bool, str | None, dict[str, Any]]:
        with open_disk(image, parent_search=tuple(parent_search)) as disk:
            if start + length > disk.size:
                raise ValueError(f"range {start}+{length} passes the end of the {disk.size}-byte disk")
            return True, None, {"start": start, "length": length, "sha256": _hash_range(disk, start, length)}

    return _record("hash-range", image, work)


def check_task(image: str, *, parent_search: Sequence[str] = ()) -> dict[str, Any]:
    """Record of a read-only ``vhdx check``: ``ok`` when the check ran to the end (a damaged image
    is a result: ``result.exit-status`` is 2 for corruptions, 3 for leaks only); not ``ok`` when it
    could not complete (not a VHDX file, unreadable), with the first check error."""

    def work() -> tuple[bool, str | None, dict[str, Any]]:
        report = check(image, parent_search=tuple(parent_search))
        result = report.to_dict()
        result["exit-status"] = report.exit_status
        if report.check_errors:
            return False, " ".join(str(report.check_errors[0]).split()), result
        return True, None, result

    return _record("check", image, work)


def convert_task(src: str, dst_dir: str, *, name: str | None = None, dst_format: str = "vhdx",
                 disk_type: str | None = None, parent_search: Sequence[str] = ()) -> dict[str, Any]:
    """Record of converting the VHDX ``src`` into ``dst_dir/name`` (by default ``src``'s file name
    with the extension of ``dst_format``). An existing file of that name is replaced: the folder
    belongs to the batch job."""

    def work() -> tuple[bool, str | None, dict[str, Any]]:
        dst = os.path.join(dst_dir, name or output_name(src, dst_format))
        result = convert(src, dst, src_format="vhdx", dst_format=dst_format,
                         disk_type=disk_type if dst_format == "vhdx" else None, overwrite=True,
                         parent_search=tuple(parent_search))
        return True, None, _kebab(result.as_dict())

    return _record("convert", src, work)


def output_name(src: str, dst_format: str) -> str:
    """``disk.vhdx`` -> ``disk.vhdx`` / ``disk.raw``; a URL's last path component likewise."""
    base = src.rstrip("/").rpartition("/")[2] if is_url(src) else os.path.basename(src)
    base = base.split("?", 1)[0] or "image"
    stem = base
    for suffix in _IMAGE_SUFFIXES:
        if base.lower().endswith(suffix):
            stem = base[: -len(suffix)]
            break
    return f"{stem}.{dst_format}"


# --- the job --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """What to do to every image of a batch (picklable: it travels to the workers).

    Attributes:
        action: ``"info"``, ``"hash"``, ``"check"`` or ``"convert"``.
        algorithms: hash: hashlib names.
        split: hash: cut each disk into ranges of this many bytes (see the module docstring).
        dest: convert: the folder for the new images.
        dst_format, disk_type: convert: ``"vhdx"`` or ``"raw"``; ``"dynamic"`` or ``"fixed"``.
        parent_search: extra folders in which to look for parents of differencing images.
    """

    action: str
    algorithms: tuple[str, ...] = ("sha256",)
    split: int | None = None
    dest: str | None = None
    dst_format: str = "vhdx"
    disk_type: str | None = None
    parent_search: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r} (one of {', '.join(ACTIONS)})")
        object.__setattr__(self, "algorithms", check_algorithms(list(self.algorithms)))
        if self.split is not None:
            if self.action != "hash":
                raise ValueError("split applies to the hash action only")
            check_split(self.split)
            if self.algorithms != ("sha256",):
                raise ValueError("split hashing computes SHA-256 only (the tree is defined over SHA-256 digests)")
        if self.action == "convert":
            if not self.dest:
                raise ValueError("convert needs a destination folder")
            if self.dst_format not in ("vhdx", "raw"):
                raise ValueError(f"output format must be 'vhdx' or 'raw', not {self.dst_format!r}")

    def params(self) -> dict[str, Any]:
        """The parameters recorded with every result; a resumed job must have the same."""
        if self.action == "hash":
            out: dict[str, Any] = {"algorithms": list(self.algorithms)}
            if self.split is not None:
                out["split"] = self.split
            return out
        if self.action == "convert":
            return {"dest": os.path.abspath(self.dest or ""), "format": self.dst_format,
                    "type": self.disk_type if self.dst_format == "vhdx" else None}
        return {}

    def run(self, image: str, name: str | None = None) -> dict[str, Any]:
        """Run the action on one image (in a worker)."""
        search = self.parent_search
        if self.action == "info":
            return info_task(image, parent_search=search)
        if self.action == "check":
            return check_task(image, parent_search=search)
        if self.action == "convert":
            assert self.dest is not None
            return convert_task(image, self.dest, name=name, dst_format=self.dst_format, disk_type=self.disk_type,
                                parent_search=search)
        return hash_task(image, algorithms=self.algorithms, split=self.split, parent_search=search)


def _plan_or_hash(job: Job, image: str) -> dict[str, Any]:
    """Split hashing, first step: hash a disk no larger than one range whole; for a larger one
    return its size (``plan``) so the ranges can go to several workers."""
    assert job.split is not None

    def work() -> tuple[bool, str | None, dict[str, Any]]:
        with open_disk(image, parent_search=job.parent_search) as disk:
            size = disk.size
        return True, None, {"virtual-size": size}

    planned = _record("hash", image, work)
    if not planned["ok"] or planned["result"]["virtual-size"] <= job.split:
        return job.run(image) if planned["ok"] else planned
    planned["plan"] = planned.pop("result")["virtual-size"]
    return planned


# --- inputs and the output file -----------------------------------------------------------------


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    """The images named by ``patterns``, in order, each once.

    A pattern with ``*``, ``?`` or ``[`` is a glob (``**`` crosses folders; for a URL, expanded by
    its fsspec filesystem); a folder stands for the ``.vhdx``/``.avhdx`` files in it; anything else
    is taken as it is. A glob that matches nothing is kept as it is, so that it is reported as a
    failure rather than silently dropped.
    """
    out: list[str] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        if name not in seen:
            seen.add(name)
            out.append(name)

    for pattern in patterns:
        matches: list[str] = []
        if is_url(pattern):
            if _GLOB_CHARS & set(pattern.rpartition("://")[2]):
                matches = _glob_url(pattern)
        elif _GLOB_CHARS & set(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if not os.path.isdir(p))
        elif os.path.isdir(pattern):
            matches = sorted(os.path.join(pattern, n) for n in os.listdir(pattern)
                             if n.lower().endswith(_IMAGE_SUFFIXES) and not os.path.isdir(os.path.join(pattern, n)))
            if not matches:
                matches = [pattern]
        for name in matches or [pattern]:
            add(name)
    return out


def _glob_url(pattern: str) -> list[str]:
    try:
        import fsspec
    except ImportError:
        raise UnsupportedError("globbing URLs needs fsspec: pip install 'vhdx[remote]'") from None
    fs, path = fsspec.core.url_to_fs(pattern)
    return [fs.unstrip_protocol(p) for p in sorted(fs.glob(path)) if not fs.isdir(p)]


def destinations(images: Sequence[str], job: Job) -> dict[str, str]:
    """Output file names for a convert job: the input's name, or when two inputs share a name,
    the name with a short hash of the input added (stable across runs of the same inputs)."""
    names = {image: output_name(image, job.dst_format) for image in images}
    counts = collections.Counter(names.values())
    for image, name in names.items():
        if counts[name] > 1:
            stem, _, ext = name.rpartition(".")
            names[image] = f"{stem}-{hashlib.sha1(image.encode('utf-8', 'surrogateescape')).hexdigest()[:10]}.{ext}"
    return names


def load_results(output: str | os.PathLike[str], job: Job) -> dict[str, dict[str, Any]]:
    """The images recorded as done (``ok``) in ``output`` by the same job, by image.

    The file is rewritten (atomically) to hold exactly those records, one per image, when it holds
    anything else: failures (they are retried), duplicates, or a partial last line left by a job
    that was killed while writing.

    Raises:
        ValueError: ``output`` holds results of a different job (another action or parameters).
    """
    path = os.fspath(output)
    if not os.path.exists(path):
        return {}
    done: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    clean = True
    params = job.params()
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                clean = False  # a partial line: the job was killed while writing it
                continue
            if not isinstance(record, dict) or "image" not in record:
                clean = False
                continue
            if record.get("action") != job.action or record.get("params", {}) != params:
                raise ValueError(f"{path} holds results of another job ({record.get('action')} with "
                                 f"{json.dumps(record.get('params', {}))}); use another output file")
            if not line.endswith("\n") or not record.get("ok"):
                clean = False
                continue
            image = record["image"]
            if image in done:
                clean = False
            else:
                order.append(image)
            done[image] = record
    if not clean:
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".batch-", suffix=".jsonl", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for image in order:
                    f.write(_line(done[image]))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return done


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, default=str) + "\n"


# --- executors ------------------------------------------------------------------------------------


class _InProcess:
    """Runs each task at once in this process (``workers=0``: debugging, tiny jobs)."""

    slots = 1
    generation = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - delivered through the future
            fut.set_exception(err)
        return fut

    def wait_first(self, pending: Sequence[Any]) -> list[Any]:
        return list(pending)

    @staticmethod
    def lost(err: BaseException) -> bool:
        return False

    def restart(self, generation: int) -> None:
        pass

    def close(self, *, cancel: bool) -> None:
        pass


class _LocalPool:
    """A pool of worker processes; a pool broken by a crashed worker is replaced."""

    def __init__(self, workers: int) -> None:
        self.slots = workers * 2
        self._workers = workers
        methods = multiprocessing.get_all_start_methods()
        # forkserver/spawn: no fork of a process that runs threads (fsspec's event loop, hashing).
        self._context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        self.generation = 0
        self._pool = self._new()

    def _new(self) -> ProcessPoolExecutor:
        self.generation += 1
        # Each worker reads with one thread: the pool already keeps every CPU busy, so splitting a
        # read across helper threads (engine/helpers.py) would only add handoffs.
        return ProcessPoolExecutor(max_workers=self._workers, mp_context=self._context,
                                   initializer=helpers.configure, initargs=(0,))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._pool.submit(fn, *args)

    def wait_first(self, pending: Sequence[Any]) -> list[Any]:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        return list(done)

    @staticmethod
    def lost(err: BaseException) -> bool:
        return isinstance(err, BrokenProcessPool)

    def restart(self, generation: int) -> None:
        if generation == self.generation:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new()

    def close(self, *, cancel: bool) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


class _Dask:
    """Tasks on a Dask cluster: at ``address``, or a LocalCluster started here (``"local"``)."""

    def __init__(self, address: str, workers: int | None) -> None:
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise UnsupportedError("--scheduler needs dask.distributed: pip install 'vhdx[dask]'") from None
        self._cluster = None
        if address == "local":
            self._cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                         processes=True, dashboard_address=None)
            self.client = Client(self._cluster)
        else:
            self.client = Client(address, timeout=10)  # seconds to reach the scheduler
        threads = sum(self.client.nthreads().values()) or 1
        self.slots = max(4, threads * 4)
        self.generation = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)

    def wait_first(self, pending: Sequence[Any]) -> list[Any]:
        from dask.distributed import wait as dask_wait

        return list(dask_wait(list(pending), return_when="FIRST_COMPLETED").done)

    @staticmethod
    def lost(err: BaseException) -> bool:
        return False  # Dask retries tasks of lost workers itself (KilledWorker after that)

    def restart(self, generation: int) -> None:
        pass

    def close(self, *, cancel: bool) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def _executor(workers: int | None, scheduler: str | None) -> _InProcess | _LocalPool | _Dask:
    if scheduler:
        return _Dask(scheduler, workers)
    if workers == 0:
        return _InProcess()
    return _LocalPool(workers or os.cpu_count() or 1)


# --- the runner -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchResult(OperationResult):
    """What ``run_batch`` did.

    Attributes:
        output: the JSON Lines file.
        action: the job's action.
        images: inputs after expansion.
        skipped: already recorded as done in ``output`` (resumed), not run again.
        succeeded, failed: images run now that succeeded / failed (each has one line in ``output``).
        tasks: tasks run (more than the images when hashes were split).
        seconds: wall time.
    """

    output: str
    action: str
    images: int
    skipped: int
    succeeded: int
    failed: int
    tasks: int
    seconds: float
    failures: tuple[str, ...] = field(default_factory=tuple)  # the images that failed now


@dataclass
class _Split:
    record: dict[str, Any]
    size: int
    started: float
    digests: list[str | None]
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is not None or all(d is not None for d in self.digests)


def run_batch(job: Job, inputs: Sequence[str], output: str | os.PathLike[str], *, workers: int | None = None,
              scheduler: str | None = None, progress: ProgressCallback | None = None) -> BatchResult:
    """Run ``job`` on every image of ``inputs``, appending one JSON line per image to ``output``.

    Args:
        job: the action and its parameters.
        inputs: paths, URLs, globs and folders (see ``expand_inputs``).
        output: the JSON Lines file; images it already records as done by the same job are
            skipped (resume), failures recorded in it are retried.
        workers: local worker processes (default: one per CPU; 0 runs the tasks in this process),
            or with ``scheduler="local"`` the Dask workers to start.
        scheduler: a Dask scheduler address (``tcp://host:8786``), or ``"local"`` to start a
            ``LocalCluster`` for the job. The images must be reachable from the workers.
        progress: called as images complete (unit ``"images"``).

    Raises:
        ValueError: ``output`` holds another job's results.
        UnsupportedError: ``scheduler`` given without dask.distributed installed.
    """
    started = time.perf_counter()
    out_path = os.fspath(output)
    images = expand_inputs(inputs)
    done = load_results(out_path, job)
    todo = [image for image in images if image not in done]
    names = destinations(images, job) if job.action == "convert" else {}
    if job.action == "convert" and job.dest:
        os.makedirs(job.dest, exist_ok=True)
    params = job.params()
    reporter = ProgressReporter(progress, "batch", len(todo), "images")
    reporter.start()
    counts = {"ok": 0, "failed": 0, "tasks": 0}
    failures: list[str] = []
    executor = _executor(workers, scheduler)
    cancel = True
    with open(out_path, "a", encoding="utf-8") as out:

        def write(record: dict[str, Any]) -> None:
            record["params"] = params
            record.pop("plan", None)
            out.write(_line(record))
            out.flush()  # a killed job leaves at most one partial line: resumable
            counts["ok" if record["ok"] else "failed"] += 1
            if not record["ok"]:
                failures.append(record["image"])
            reporter.advance(1)

        try:
            _drive(job, todo, names, executor, write, counts)
            cancel = False
        finally:
            executor.close(cancel=cancel)
            out.flush()
            with contextlib.suppress(OSError):
                os.fsync(out.fileno())
    reporter.finish()
    return BatchResult(output=out_path, action=job.action, images=len(images), skipped=len(images) - len(todo),
                       succeeded=counts["ok"], failed=counts["failed"], tasks=counts["tasks"],
                       seconds=time.perf_counter() - started, failures=tuple(failures))


def _drive(job: Job, todo: list[str], names: dict[str, str], executor: Any,
           write: Callable[[dict[str, Any]], None], counts: dict[str, int]) -> None:
    """Keep the executor busy with at most ``executor.slots`` tasks in flight until every image
    is written. Items are ("image", image) or ("range", image, index, start, length)."""
    queue: collections.deque[tuple[Any, ...]] = collections.deque(("image", image) for image in todo)
    pending: dict[Any, tuple[tuple[Any, ...], int]] = {}
    attempts: collections.Counter[tuple[Any, ...]] = collections.Counter()
    splits: dict[str, _Split] = {}

    def submit(item: tuple[Any, ...]) -> None:
        counts["tasks"] += 1
        if item[0] == "image":
            image = item[1]
            if job.split is not None:
                fut = executor.submit(_plan_or_hash, job, image)
            else:
                fut = executor.submit(_run_job, job, image, names.get(image))
        else:
            _, image, _index, start, length = item
            fut = executor.submit(_run_range, job, image, start, length)
        pending[fut] = (item, executor.generation)

    def fail(item: tuple[Any, ...], message: str) -> None:
        image = item[1]
        if item[0] == "image":
            write({"image": image, "action": job.action, "ok": False, "error": message, "seconds": 0.0})
            return
        state = splits.get(image)
        if state is None:  # the image was already written as failed by another of its ranges
            return
        if state.error is None:
            state.error = f"range {item[2]} (bytes {item[3]}+{item[4]}): {message}"
        finish_split(image)

    def finish_split(image: str) -> None:
        state = splits[image]
        if not state.complete:
            return
        del splits[image]
        record = state.record
        record["seconds"] = round(time.perf_counter() - state.started, 6)
        if state.error is not None:
            record.update(ok=False, error=state.error)
            record.pop("result", None)
            kept = [q for q in queue if not (q[0] == "range" and q[1] == image)]  # its other ranges are moot
            queue.clear()
            queue.extend(kept)
        else:
            digests = [d for d in state.digests if d is not None]
            record.update(ok=True, error=None, result=_split_result(state.size, job.split or 0, digests))
        write(record)

    while queue or pending:
        while queue and len(pending) < executor.slots:
            submit(queue.popleft())
        for fut in executor.wait_first(list(pending)):
            item, generation = pending.pop(fut)
            try:
                value = fut.result()
            except Exception as err:  # noqa: BLE001 - a task that died (worker crash, lost worker)
                if executor.lost(err) and attempts[item] + 1 < _MAX_ATTEMPTS:
                    attempts[item] += 1
                    executor.restart(generation)
                    queue.appendleft(item)
                    continue
                fail(item, f"the task did not complete: {describe_error(err)}")
                continue
            if item[0] == "image":
                if "plan" in value:
                    size = int(value["plan"])
                    ranges = split_ranges(size, job.split or size)
                    splits[item[1]] = _Split(record=value, size=size, started=time.perf_counter() - value["seconds"],
                                             digests=[None] * len(ranges))
                    # The ranges of this image go first, so images complete one after another.
                    queue.extendleft(reversed([("range", item[1], i, s, n) for i, (s, n) in enumerate(ranges)]))
                else:
                    write(value)
            else:
                state = splits.get(item[1])
                if state is None:  # already written as failed
                    continue
                if value["ok"]:
                    state.digests[item[2]] = value["result"]["sha256"]
                    finish_split(item[1])
                else:
                    fail(item, value["error"])


def _run_job(job: Job, image: str, name: str | None) -> dict[str, Any]:
    return job.run(image, name)


def _run_range(job: Job, image: str, start: int, length: int) -> dict[str, Any]:
    return hash_range_task(image, start, length, parent_search=job.parent_search)


def iter_results(output: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The records of a JSON Lines output file (partial lines skipped)."""
    with open(output, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    yield record


__all__ = ["ACTIONS", "BatchResult", "DEFAULT_SPLIT", "Job", "check_task", "convert_task", "describe_error",
           "destinations", "expand_inputs", "hash_range_task", "hash_task", "info_task", "iter_results",
           "load_results", "output_name", "run_batch", "split_ranges", "tree_root"]
