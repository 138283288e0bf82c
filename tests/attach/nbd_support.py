"""Running ``vhdx serve`` for tests, and a tiny raw NBD client to send what real clients never do."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Server:
    """``vhdx serve`` in a subprocess on a free loopback port."""

    def __init__(self, image: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "vhdx_cli.main", "serve", str(image), "--bind", "127.0.0.1:0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line.startswith("nbd://"):
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise RuntimeError(f"vhdx serve did not start: {line!r} {err!r}")
        self.url = line
        hostport = line[len("nbd://") :].split("/", 1)[0]
        self.host, port = hostport.rsplit(":", 1)
        self.port = int(port)
        self.export = line.split("/", 3)[3]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x0003E889045565A9


class RawClient:
    """Just enough of a client to reach any state of the protocol by hand."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def greet(self, client_flags: int = 3) -> int:
        magic, opt, flags = struct.unpack(">QQH", self.recv_exact(18))
        assert (magic, opt) == (NBDMAGIC, IHAVEOPT)
        self.sock.sendall(struct.pack(">I", client_flags))
        return flags

    def option(self, option: int, data: bytes = b"") -> None:
        self.sock.sendall(struct.pack(">QII", IHAVEOPT, option, len(data)) + data)

    def reply(self) -> tuple[int, int, bytes]:
        magic, option, kind, length = struct.unpack(">QIII", self.recv_exact(20))
        assert magic == REPLY_MAGIC
        return option, kind, self.recv_exact(length)

    def replies_until_final(self) -> list[tuple[int, int, bytes]]:
        out = []
        while True:
            r = self.reply()
            out.append(r)
            if r[1] == 1 or r[1] & (1 << 31):  # ACK or an error ends the option
                return out

    def go(self, name: str = "", structured: bool = True, meta: bool = True) -> int:
        """Negotiate to transmission; return the transmission flags."""
        if structured:
            self.option(8)
            assert self.reply()[1] == 1
        if meta:
            enc = name.encode()
            q = b"base:allocation"
            self.option(10, struct.pack(">I", len(enc)) + enc + struct.pack(">I", 1) + struct.pack(">I", len(q)) + q)
            self.replies_until_final()
        enc = name.encode()
        self.option(7, struct.pack(">I", len(enc)) + enc + struct.pack(">H", 0))
        flags = 0
        for _, kind, data in self.replies_until_final():
            assert not kind & (1 << 31), data
            if kind == 3 and struct.unpack(">H", data[:2])[0] == 0:
                flags = struct.unpack(">HQH", data)[2]
        return flags

    def request(self, kind: int, offset: int = 0, length: int = 0, data: bytes = b"", flags: int = 0,
                cookie: int = 1, magic: int = 0x25609513) -> None:
        self.sock.sendall(struct.pack(">IHHQQI", magic, flags, kind, cookie, offset, length) + data)

    def simple_reply(self) -> tuple[int, int]:
        magic, error, cookie = struct.unpack(">IIQ", self.recv_exact(16))
        assert magic == 0x67446698, hex(magic)
        return error, cookie

    def structured_chunk(self) -> tuple[int, int, int, bytes]:
        head = self.recv_exact(4)
        (magic,) = struct.unpack(">I", head)
        if magic == 0x67446698:
            error, cookie = struct.unpack(">IQ", self.recv_exact(12))
            return -1, error, cookie, b""
        assert magic == 0x668E33EF, hex(magic)
        flags, kind, cookie, length = struct.unpack(">HHQI", self.recv_exact(16))
        return flags, kind, cookie, self.recv_exact(length)

    def closed_by_server(self, timeout: float = 10.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def env_with_repo() -> dict[str, str]:
    env = dict(os.environ)
    return env
