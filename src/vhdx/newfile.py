"""New output files made safely: built under a temporary name in the target's folder, then moved
into place in one step, never replacing a file that exists unless asked to. Used by create() and
by operations that write a new image (convert)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile


def make_temp(dst: str | os.PathLike[str], suffix: str = "") -> tuple[int, str]:
    """Open a new empty file next to ``dst`` (same file system, so publishing it is atomic)."""
    path = os.fspath(dst)
    folder = os.path.dirname(os.path.abspath(path))
    return tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=folder)


def publish(tmp: str, dst: str | os.PathLike[str], *, overwrite: bool) -> None:
    """Move the finished ``tmp`` to ``dst`` atomically. Without ``overwrite`` a file that exists
    (or appeared meanwhile) is never replaced: FileExistsError."""
    dst = os.fspath(dst)
    os.chmod(tmp, 0o666 & ~current_umask())
    if overwrite:
        os.replace(tmp, dst)
    else:
        try:
            os.link(tmp, dst)  # fails if dst exists, where a rename would silently replace it
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system: check, then rename
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), dst) from None
            os.rename(tmp, dst)
        else:
            os.unlink(tmp)
    sync_dir(os.path.dirname(os.path.abspath(dst)))


def discard(tmp: str) -> None:
    """Remove a temporary file that will not be published."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def sync_dir(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
