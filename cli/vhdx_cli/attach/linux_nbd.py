"""Linux attach: the image as a block device (/dev/nbdN) through our NBD server and the kernel's
NBD client (``nbd-client``), as ``qemu-nbd -c`` does for the images QEMU can open.

``vhdx serve`` runs in the background on a private Unix socket; ``nbd-client -unix SOCKET DEVICE``
connects the kernel to it; partitions then appear as /dev/nbdNpM. Detaching disconnects the
device and stops the server, which flushes and closes the image. Every missing prerequisite
(the nbd module, nbd-client, root) is reported by name, with ``vhdx mount`` suggested instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import vhdx

from . import state
from .backends import AttachRequest, Attachment

SERVER_TIMEOUT = 20.0
FALLBACK = "use 'vhdx mount IMAGE DIR' (FUSE, no kernel module or root needed) or 'vhdx serve IMAGE' instead"


class NbdBackend:
    """``vhdx attach --backend nbd`` (the default on Linux)."""

    name = "nbd"

    def __init__(self, sys_root: str = "/", which: Callable[[str], str | None] = shutil.which,
                 euid: Callable[[], int] | None = None) -> None:
        self.sys_root = Path(sys_root)
        self.which = which
        self.euid = euid or (os.geteuid if hasattr(os, "geteuid") else (lambda: 0))

    # --- prerequisites ---------------------------------------------------------------------------------
    def missing(self) -> list[str]:
        """What stops a kernel attach here, each said plainly (empty when nothing does)."""
        problems = []
        if not sys.platform.startswith("linux"):
            return [f"kernel NBD devices exist only on Linux (this is {sys.platform})"]
        if not (self.sys_root / "sys/module/nbd").exists() and not (self.sys_root / "dev/nbd0").exists():
            problems.append("the nbd kernel module is not loaded (run 'modprobe nbd' as root; some containers and "
                            "WSL kernels do not have it)")
        if self.which("nbd-client") is None:
            problems.append("nbd-client is not installed (Debian/Ubuntu: apt install nbd-client)")
        if self.euid() != 0:
            problems.append("connecting a kernel NBD device needs root (run with sudo)")
        return problems

    def available(self) -> tuple[bool, str]:
        problems = self.missing()
        return (not problems, "; ".join(problems) + f"; {FALLBACK}" if problems else "")

    def _require(self) -> None:
        problems = self.missing()
        if problems:
            raise vhdx.VhdxError(f"cannot attach as a block device: {'; '.join(problems)}; {FALLBACK}")

    def free_device(self) -> str:
        block = self.sys_root / "sys/block"
        for dev in sorted(block.glob("nbd*"), key=lambda p: int(p.name[3:]) if p.name[3:].isdigit() else 1 << 30):
            if not (dev / "pid").exists() and (dev / "size").exists() and (dev / "size").read_text().strip() == "0":
                return f"/dev/{dev.name}"
        raise vhdx.VhdxError("every /dev/nbdN device is in use (load the module with more: modprobe nbd nbds_max=32)")

    # --- the interface ---------------------------------------------------------------------------------
    def attach(self, request: AttachRequest) -> Attachment:
        self._require()
        device = request.device or self.free_device()
        sock = str(state.path_for("nbd", device).with_suffix(".sock"))
        if os.path.exists(sock):
            os.unlink(sock)
        cmd = [sys.executable, "-m", "vhdx_cli.main", "serve", request.image, "--socket", sock, "--export-name", "disk"]
        if not request.read_only:
            cmd.append("--writable")
        log_path = state.path_for("nbd", device).with_suffix(".log")
        with open(log_path, "wb") as log:
            server = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        end = time.monotonic() + SERVER_TIMEOUT
        while not os.path.exists(sock):
            if server.poll() is not None or time.monotonic() > end:
                server.kill()
                lines = log_path.read_text(errors="replace").strip().splitlines()
                raise vhdx.VhdxError(f"the NBD server for {request.image} did not start: "
                                     f"{lines[-1] if lines else 'no output'}")
            time.sleep(0.05)
        client = [self.which("nbd-client") or "nbd-client", "-unix", sock, device, "-N", "disk"]
        if request.read_only:
            client.append("-readonly")
        done = subprocess.run(client, capture_output=True, text=True)
        if done.returncode != 0:
            state.terminate(server.pid)
            raise vhdx.VhdxError(f"nbd-client could not connect {device}: {done.stderr.strip() or done.stdout.strip()}")
        record = state.Record("nbd", os.path.abspath(request.image), device, server.pid, request.read_only,
                              details={"socket": sock})
        state.save(record)
        return Attachment("nbd", record.image, device, request.read_only, {"pid": server.pid, "socket": sock})

    def detach(self, target: str) -> None:
        record = state.load("nbd", target) or next(
            (r for r in state.all_records("nbd") if r.image == os.path.abspath(target)), None)
        if record is None:
            raise vhdx.VhdxError(f"{target} is not attached by vhdx")
        client = self.which("nbd-client")
        if client is not None:
            subprocess.run([client, "-d", record.target], capture_output=True, text=True)
        if not state.terminate(record.pid):
            raise vhdx.VhdxError(f"the NBD server of {record.target} (pid {record.pid}) did not exit")
        state.remove("nbd", record.target)

    def list_attached(self) -> list[Attachment]:
        return [Attachment("nbd", r.image, r.target, r.read_only, {"pid": r.pid, **r.details})
                for r in state.all_records("nbd")]

    def add_to_vm(self, request: AttachRequest) -> Attachment:
        raise vhdx.VhdxError("the nbd backend has no virtual machines (use --backend hyperv)")

    def remove_from_vm(self, target: str, vm: str) -> None:
        raise vhdx.VhdxError("the nbd backend has no virtual machines (use --backend hyperv)")


__all__ = ["NbdBackend"]
