"""Records of the background processes that keep images attached (FUSE mounts, NBD servers for
kernel devices), so ``vhdx unmount``/``vhdx detach`` and listings can find them again.

One small JSON file per attachment in a per-user runtime folder: ``$VHDX_STATE_DIR``, else
``$XDG_RUNTIME_DIR/vhdx``, else ``<tmp>/vhdx-<uid>``. A record whose process is gone is stale and
is dropped when read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Record:
    kind: str  # "fuse" or "nbd"
    image: str
    target: str  # mount point or device
    pid: int
    read_only: bool
    started: float = field(default_factory=time.time)
    details: dict[str, Any] = field(default_factory=dict)


def state_dir() -> Path:
    explicit = os.environ.get("VHDX_STATE_DIR")
    if explicit:
        base = Path(explicit)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "vhdx"
    else:
        base = Path(tempfile.gettempdir()) / f"vhdx-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def _key(kind: str, target: str) -> str:
    return hashlib.sha1(f"{kind}:{os.path.realpath(target)}".encode()).hexdigest()[:16]


def path_for(kind: str, target: str) -> Path:
    return state_dir() / f"{kind}-{_key(kind, target)}.json"


def save(record: Record) -> None:
    path = path_for(record.kind, record.target)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, path)


def remove(kind: str, target: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        path_for(kind, target).unlink()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load(kind: str, target: str) -> Record | None:
    path = path_for(kind, target)
    try:
        record = Record(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    if not alive(record.pid):
        remove(kind, target)
        return None
    return record


def all_records(kind: str | None = None) -> list[Record]:
    out = []
    for path in sorted(state_dir().glob("*.json")):
        try:
            record = Record(**json.loads(path.read_text()))
        except (ValueError, TypeError, OSError):
            continue
        if kind is not None and record.kind != kind:
            continue
        if alive(record.pid):
            out.append(record)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return out


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait for ``pid`` to exit (it flushes and closes its image on the way out)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not alive(pid):
            return True
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return not alive(pid)


def terminate(pid: int, timeout: float = 30.0) -> bool:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    return wait_gone(pid, timeout)
