"""Remote-image test support: a loopback HTTP server with byte-range support, and the fsspec
memory filesystem (what ``memory://`` URLs read)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from helpers import require_module

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class ServerLog:
    """What the server saw: its own count of the body bytes it sent, independent of the client."""

    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range header)
    bytes_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class RangeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, *, honour_ranges: bool = True) -> None:
        self.root = root
        self.honour_ranges = honour_ranges
        self.log = ServerLog()
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: RangeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _file(self) -> Path | None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (self.server.root / rel).resolve()
        if self.server.root.resolve() not in path.parents or not path.is_file():
            return None
        return path

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, *, body: bool) -> None:
        header = self.headers.get("Range")
        with self.server.log.lock:
            self.server.log.requests.append((self.command, self.path, header))
        path = self._file()
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = path.stat().st_size
        start, end = 0, size  # [start, end)
        status = 200
        if header and self.server.honour_ranges:
            m = _RANGE.match(header.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(m.group(1))
            end = min(size, int(m.group(2)) + 1) if m.group(2) else size
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes" if self.server.honour_ranges else "none")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        self.end_headers()
        if not body:
            return
        with open(path, "rb") as f:
            f.seek(start)
            left = end - start
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)
                with self.server.log.lock:
                    self.server.log.bytes_sent += len(chunk)


@contextmanager
def http_server(root: Path, *, honour_ranges: bool = True) -> Iterator[RangeServer]:
    """Serve ``root`` on a loopback port for the duration of the block (stopped afterwards)."""
    require_module("aiohttp")  # what fsspec's HTTP filesystem is built on
    server = RangeServer(root, honour_ranges=honour_ranges)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def memory_put(files: dict[str, Path]) -> dict[str, str]:
    """Copy local files into fsspec's memory filesystem; returns ``{key: memory:// URL}``."""
    fsspec = require_module("fsspec")
    fs = fsspec.filesystem("memory")
    urls = {}
    for key, path in files.items():
        target = "/" + key.lstrip("/")
        fs.pipe(target, path.read_bytes())
        urls[key] = "memory://" + target
    return urls


def memory_remove(prefix: str) -> None:
    fsspec = require_module("fsspec")
    fs = fsspec.filesystem("memory")
    target = "/" + prefix.strip("/")
    if fs.exists(target):
        fs.rm(target, recursive=True)


def file_url(path: Path) -> str:
    return "file://" + os.path.abspath(path)
