"""Expose a virtual disk (and, on request, each of its partitions) as plain files through FUSE.

Uses mfusepy (the optional extra ``vhdx[fuse]``) and the system's libfuse 3. The mount point holds
``disk`` (the whole virtual disk) and, with partitions, ``part1``, ``part2``, ... (MBR logical
partitions from ``part5``; extended containers are not shown). Any tool can read them; with a
writable mount, writes go through the image's log and ``fsync`` makes them durable. Requests
from FUSE's threads reach the disk one at a time (one lock): the engine is not re-entrant.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import vhdx
from vhdx.ops.partitions import PartitionWindow, list_partitions

from . import state
from .backends import AttachRequest, Attachment

MOUNT_TIMEOUT = 20.0  # seconds to wait for a background mount to appear


def load_fuse() -> Any:
    try:
        import mfusepy
    except ImportError as err:  # the extra is not installed, or libfuse is missing
        raise vhdx.VhdxError(f"FUSE support needs mfusepy and libfuse3 (pip install 'vhdx[fuse]'; "
                             f"apt install fuse3): {err}") from None
    return mfusepy


@dataclass
class _Node:
    window: Any  # VirtualDisk-like: pread / pwrite / size
    size: int


class _DiskWindow:
    def __init__(self, disk: vhdx.VirtualDisk) -> None:
        self.disk = disk
        self.size = disk.size

    def pread(self, offset: int, length: int) -> bytes:
        return self.disk.pread(offset, length)

    def pwrite(self, offset: int, data: bytes) -> int:
        if offset + len(data) > self.size:
            raise ValueError("write past the end of the disk")
        return self.disk.pwrite(offset, data)


def build_nodes(disk: vhdx.VirtualDisk, partitions: bool) -> dict[str, _Node]:
    nodes = {"disk": _Node(_DiskWindow(disk), disk.size)}
    if partitions:
        for part in list_partitions(disk).partitions:
            if part.kind == "extended":
                continue
            window = PartitionWindow(disk, part)
            nodes[f"part{part.index}"] = _Node(window, window.size)
    return nodes


def make_operations(disk: vhdx.VirtualDisk, nodes: dict[str, _Node], writable: bool, image_stat: os.stat_result) -> Any:
    fuse = load_fuse()
    lock = threading.Lock()
    file_mode = stat.S_IFREG | (0o644 if writable else 0o444)

    class DiskFS(fuse.Operations):  # type: ignore[misc, name-defined]
        use_ns = True

        def _node(self, path: str) -> _Node:
            node = nodes.get(path.lstrip("/"))
            if node is None:
                raise fuse.FuseOSError(errno.ENOENT)
            return node

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            times = {"st_atime": image_stat.st_atime_ns, "st_mtime": image_stat.st_mtime_ns,
                     "st_ctime": image_stat.st_ctime_ns}
            owner = {"st_uid": image_stat.st_uid, "st_gid": image_stat.st_gid}
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2, **times, **owner}
            node = self._node(path)
            return {"st_mode": file_mode, "st_nlink": 1, "st_size": node.size, "st_blocks": (node.size + 511) // 512,
                    **times, **owner}

        def readdir(self, path: str, fh: int) -> list[str]:
            if path != "/":
                raise fuse.FuseOSError(errno.ENOTDIR)
            return [".", "..", *nodes]

        def open(self, path: str, flags: int) -> int:
            self._node(path)
            if not writable and flags & (os.O_WRONLY | os.O_RDWR):
                raise fuse.FuseOSError(errno.EROFS)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            node = self._node(path)
            with lock:
                return node.window.pread(offset, size)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            if not writable:
                raise fuse.FuseOSError(errno.EROFS)
            node = self._node(path)
            if offset + len(data) > node.size:
                raise fuse.FuseOSError(errno.ENOSPC)  # a disk does not grow by writing past its end
            with lock:
                node.window.pwrite(offset, bytes(data))
            return len(data)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            node = self._node(path)
            if length != node.size:
                raise fuse.FuseOSError(errno.EPERM)  # resize the image with `vhdx resize` instead
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            if writable:
                with lock:
                    disk.flush()
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            total = sum(n.size for n in nodes.values())
            return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": total // 4096, "f_bfree": 0, "f_bavail": 0,
                    "f_namemax": 255}

        def destroy(self, path: str) -> None:
            with lock:
                if writable:
                    disk.flush()

    return DiskFS()


def run_foreground(image: str, mountpoint: str, *, writable: bool, partitions: bool, parent: str | None = None,
                   parent_search: tuple[str, ...] = (), ignore_id_mismatch: bool = False) -> None:
    """Mount and serve until unmounted (blocks)."""
    fuse = load_fuse()
    disk = vhdx.open(image, "r+b" if writable else "rb", parent=parent, parent_search=parent_search,
                     ignore_id_mismatch=ignore_id_mismatch)
    try:
        nodes = build_nodes(disk, partitions)
        ops = make_operations(disk, nodes, writable, os.stat(image))
        fuse.FUSE(ops, mountpoint, foreground=True, ro=not writable, fsname=f"vhdx:{os.path.abspath(image)}",
                  subtype="vhdx", default_permissions=True)
    finally:
        disk.close()


def mount(request: AttachRequest, *, partitions: bool = False, parent: str | None = None,
          parent_search: tuple[str, ...] = (), ignore_id_mismatch: bool = False) -> Attachment:
    """Mount in a background process; return once the mount is there."""
    load_fuse()
    if request.mountpoint is None:
        raise vhdx.VhdxError("a FUSE mount needs a mount point")
    mountpoint = os.path.abspath(request.mountpoint)
    if not os.path.isdir(mountpoint):
        raise vhdx.VhdxError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise vhdx.VhdxError(f"{mountpoint} is already a mount point")
    cmd = [sys.executable, "-m", "vhdx_cli.main", "mount", "--foreground", request.image, mountpoint]
    if not request.read_only:
        cmd.append("--writable")
    if partitions:
        cmd.append("--partitions")
    if parent:
        cmd += ["--parent", parent]
    for folder in parent_search:
        cmd += ["--parent-search", folder]
    if ignore_id_mismatch:
        cmd.append("--ignore-id-mismatch")
    log_path = state.path_for("fuse", mountpoint).with_suffix(".log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    end = time.monotonic() + MOUNT_TIMEOUT
    while time.monotonic() < end:
        if os.path.ismount(mountpoint):
            break
        if proc.poll() is not None:
            message = log_path.read_text(errors="replace").strip().splitlines()
            raise vhdx.VhdxError(f"mounting {request.image} failed: {message[-1] if message else 'no output'}")
        time.sleep(0.05)
    else:
        proc.kill()
        raise vhdx.VhdxError(f"mounting {request.image} on {mountpoint} did not complete in {MOUNT_TIMEOUT:.0f} s")
    files = sorted(os.listdir(mountpoint))
    record = state.Record("fuse", os.path.abspath(request.image), mountpoint, proc.pid, request.read_only,
                          details={"files": files})
    state.save(record)
    return Attachment("fuse", record.image, mountpoint, request.read_only, {"pid": proc.pid, "files": files})


def unmount(mountpoint: str, timeout: float = 30.0) -> None:
    """Unmount, then wait for the serving process to flush and close the image."""
    mountpoint = os.path.abspath(mountpoint)
    record = state.load("fuse", mountpoint)
    if not os.path.ismount(mountpoint):
        if record is not None:
            state.terminate(record.pid, timeout)
            state.remove("fuse", mountpoint)
            return
        raise vhdx.VhdxError(f"{mountpoint} is not mounted")
    errors = []
    for cmd in (["fusermount3", "-u", mountpoint], ["fusermount", "-u", mountpoint], ["umount", mountpoint]):
        if shutil.which(cmd[0]) is None:
            continue
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            break
        errors.append(done.stderr.strip() or f"{cmd[0]} failed")
    else:
        raise vhdx.VhdxError(f"cannot unmount {mountpoint}: {'; '.join(errors) or 'no fusermount or umount found'}")
    if record is not None:
        if not state.wait_gone(record.pid, timeout):
            raise vhdx.VhdxError(f"{mountpoint} was unmounted but its server (pid {record.pid}) did not exit")
        state.remove("fuse", mountpoint)


class FuseBackend:
    """The FUSE mount behind the attach interface (``vhdx attach --backend fuse``)."""

    name = "fuse"

    def available(self) -> tuple[bool, str]:
        try:
            load_fuse()
        except vhdx.VhdxError as err:
            return False, str(err)
        if not os.path.exists("/dev/fuse"):
            return False, "/dev/fuse is missing (load the fuse kernel module)"
        return True, ""

    def attach(self, request: AttachRequest) -> Attachment:
        return mount(request, partitions=request.options.get("partitions", "") in ("1", "true", "yes"))

    def detach(self, target: str) -> None:
        unmount(target)

    def list_attached(self) -> list[Attachment]:
        return [Attachment("fuse", r.image, r.target, r.read_only, {"pid": r.pid, **r.details})
                for r in state.all_records("fuse")]

    def add_to_vm(self, request: AttachRequest) -> Attachment:
        raise vhdx.VhdxError("the fuse backend has no virtual machines (use --backend hyperv)")

    def remove_from_vm(self, target: str, vm: str) -> None:
        raise vhdx.VhdxError("the fuse backend has no virtual machines (use --backend hyperv)")


__all__ = ["FuseBackend", "build_nodes", "mount", "run_foreground", "unmount"]
