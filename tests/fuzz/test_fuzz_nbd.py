"""Fuzzing ``vhdx serve`` (issue #7, item 4): malformed handshakes and requests from hostile clients.

Hypothesis generates what real clients never send: byte soup at any point of the handshake,
options with unknown codes, lying lengths and truncated data, and, after a proper negotiation,
requests with unknown commands, reserved flags, out-of-range and overflowing offsets, huge
lengths, WRITE payloads cut short, and disconnects at any point (a clean FIN or a reset).

After every example the server must still be up and answer a fresh, well-formed client with the
image's true bytes; at the end the read-only image is byte-identical (sha256) and the server's
stderr holds no traceback. A writable export gets the same treatment and must leave an image that
opens and passes ``vhdx check`` (leaks from trimmed blocks aside).

The server is the real ``vhdx serve`` subprocess (``tests/attach/nbd_support.py``).
"""

from __future__ import annotations

import hashlib
import os
import random
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vhdx
from attach.nbd_support import IHAVEOPT, RawClient, Server
from vhdx.constants import MiB
from vhdx.ops import check

SIZE = 8 * MiB
EXAMPLES = int(os.environ.get("VHDX_FUZZ_EXAMPLES", "0")) or settings.default.max_examples * 2
NBD_SETTINGS = settings(max_examples=EXAMPLES, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
REQUEST_MAGIC = 0x25609513
MAX_REQUEST = 32 * MiB  # the server's advertised maximum (vhdx_cli.attach.nbd.MAX_REQUEST)

OFFSETS = st.one_of(st.sampled_from([0, 1, SIZE - 512, SIZE - 1, SIZE, SIZE + 1, 1 << 32, (1 << 63) - 1, 1 << 63,
                                     (1 << 64) - 4096, (1 << 64) - 1]), st.integers(0, SIZE))
LENGTHS = st.one_of(st.sampled_from([0, 1, 511, 512, 4096, MiB, MAX_REQUEST, MAX_REQUEST + 1, 64 * MiB + 1,
                                     (1 << 31), (1 << 32) - 1]), st.integers(0, 70_000))
COMMANDS = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8]), st.integers(0, 0xFFFF))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("nbd-fuzz") / "disk.vhdx"
    rng = random.Random(7)
    with vhdx.create(path, SIZE, block_size=MiB) as disk:
        disk.pwrite(MiB, rng.randbytes(MiB))
        disk.pwrite(5 * MiB + 100, rng.randbytes(3000))
    with vhdx.open(path) as disk:
        content = disk.read()
    return path, content


@pytest.fixture(scope="module")
def server(image: tuple[Path, bytes]) -> Iterator[Server]:
    path, _ = image
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    srv = Server(path)
    yield srv
    code, err = srv.stop()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # a read-only export is never written


# --- what the hostile client does ------------------------------------------------------------------

option_ops = st.lists(st.one_of(
    st.tuples(st.just("raw"), st.binary(max_size=64)),
    st.tuples(st.just("option"), st.one_of(st.sampled_from([1, 2, 3, 5, 6, 7, 8, 9, 10]), st.integers(0, 0xFFFFFFFF)),
              st.binary(max_size=80), st.one_of(st.none(), st.integers(0, 0xFFFFFFFF))),
    st.tuples(st.just("info"), st.sampled_from([6, 7]), st.binary(max_size=12), st.integers(0, 0xFFFFFFFF),
              st.integers(0, 0xFFFF)),
    st.tuples(st.just("meta"), st.sampled_from([9, 10]), st.integers(0, 0xFFFFFFFF), st.lists(st.binary(max_size=20),
                                                                                           max_size=4)),
), max_size=8)

requests = st.lists(st.tuples(
    COMMANDS,  # kind
    st.one_of(st.just(0), st.integers(0, 0xFFFF)),  # flags
    OFFSETS,
    LENGTHS,
    st.one_of(st.none(), st.integers(0, 5000)),  # WRITE payload actually sent (None: all of it, when small)
    st.booleans(),  # good magic
), max_size=10)


def _drain(sock: socket.socket, seconds: float = 0.05) -> None:
    """Read whatever the server has sent (so it is never stuck on a full socket) without waiting long."""
    sock.settimeout(seconds)
    try:
        while sock.recv(1 << 20):
            pass
    except (TimeoutError, socket.timeout, ConnectionError, OSError):
        pass


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except (ConnectionError, OSError):
        return False  # the server already dropped us: fine


def _hang_up(client: RawClient, reset: bool) -> None:
    if reset:  # an abortive close (RST), as a crashed client does
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def _play_options(client: RawClient, ops: list[tuple]) -> bool:  # type: ignore[type-arg]
    for op in ops:
        if op[0] == "raw":
            payload = op[1]
        elif op[0] == "option":
            _, code, data, declared = op
            length = len(data) if declared is None else declared
            payload = struct.pack(">QII", IHAVEOPT, code, length) + data
        elif op[0] == "info":
            _, code, name, name_length, count = op
            payload = struct.pack(">I", name_length) + name + struct.pack(">H", count)
            payload = struct.pack(">QII", IHAVEOPT, code, len(payload)) + payload
        else:
            _, code, name_length, queries = op
            body = struct.pack(">I", name_length) + struct.pack(">I", len(queries))
            body += b"".join(struct.pack(">I", len(q)) + q for q in queries)
            payload = struct.pack(">QII", IHAVEOPT, code, len(body)) + body
        if not _send(client.sock, payload):
            return False
        _drain(client.sock, 0.01)
    return True


def _verify(server: Server, content: bytes, rng: random.Random) -> None:
    """The server is up and serves the true bytes to a fresh, well-formed client."""
    assert server.alive(), "the server died"
    client = RawClient(server.host, server.port)
    try:
        client.greet()
        client.go(structured=False, meta=False)
        offset = rng.randrange(0, SIZE - 4096)
        client.request(0, offset, 4096, cookie=77)
        assert client.simple_reply() == (0, 77)
        assert client.recv_exact(4096) == content[offset : offset + 4096]
        client.request(2)
    finally:
        client.close()


# --- the tests -----------------------------------------------------------------------------------------


@NBD_SETTINGS
@given(greet=st.booleans(), client_flags=st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(0, 0xFFFFFFFF)),
       ops=option_ops, reset=st.booleans(), seed=st.integers(0, 1 << 30))
def test_hostile_handshakes(server: Server, image: tuple[Path, bytes], greet: bool, client_flags: int,
                            ops: list[tuple], reset: bool, seed: int) -> None:  # type: ignore[type-arg]
    client = RawClient(server.host, server.port)
    try:
        if greet:
            client.recv_exact(18)
        if _send(client.sock, struct.pack(">I", client_flags)):
            _play_options(client, ops)
        _drain(client.sock)
    finally:
        _hang_up(client, reset)
    _verify(server, image[1], random.Random(seed))


@NBD_SETTINGS
@given(structured=st.booleans(), meta=st.booleans(), reqs=requests, disc=st.booleans(), reset=st.booleans(),
       seed=st.integers(0, 1 << 30))
def test_hostile_requests(server: Server, image: tuple[Path, bytes], structured: bool, meta: bool,
                          reqs: list[tuple[int, int, int, int, int | None, bool]], disc: bool, reset: bool,
                          seed: int) -> None:
    client = RawClient(server.host, server.port)
    try:
        client.greet()
        client.go(structured=structured, meta=meta and structured)
        for cookie, (kind, flags, offset, length, sent, good_magic) in enumerate(reqs):
            head = struct.pack(">IHHQQI", REQUEST_MAGIC if good_magic else 0x12345678, flags, kind, cookie,
                               offset, length)
            payload = b""
            if kind == 1:  # WRITE: a payload of what was promised (when small) or of ``sent`` bytes
                count = length if sent is None and length <= 70_000 else (sent or 0)
                payload = bytes([cookie & 0xFF]) * count
            if not _send(client.sock, head + payload):
                break
            _drain(client.sock, 0.01)
        if disc:
            _send(client.sock, struct.pack(">IHHQQI", REQUEST_MAGIC, 0, 2, 999, 0, 0))
        _drain(client.sock)
    finally:
        _hang_up(client, reset)
    _verify(server, image[1], random.Random(seed))


@pytest.fixture(scope="module")
def writable_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A writable export: at the end, the image must open and ``vhdx check`` find no corruption
    (trimmed blocks may leave leaks, which are not corruption)."""
    path = tmp_path_factory.mktemp("nbd-w") / "w.vhdx"
    vhdx.create(path, 4 * MiB, block_size=MiB).close()
    srv = Server(path, "--writable")
    yield srv
    assert srv.alive()
    code, err = srv.stop()
    assert code == 0 and "Traceback" not in err, err
    report = check(path)
    assert report.corruptions == 0, report.to_dict()
    with vhdx.open(path) as disk:
        assert len(disk.read()) == 4 * MiB


@NBD_SETTINGS
@given(reqs=requests, reset=st.booleans(), seed=st.integers(0, 1 << 30))
def test_hostile_requests_on_a_writable_export(writable_server: Server,
                                               reqs: list[tuple[int, int, int, int, int | None, bool]],
                                               reset: bool, seed: int) -> None:
    """A writable export changes the image only through journaled writes, whatever the client sends."""
    client = RawClient(writable_server.host, writable_server.port)
    try:
        client.greet()
        client.go()
        for cookie, (kind, flags, offset, length, sent, good_magic) in enumerate(reqs):
            head = struct.pack(">IHHQQI", REQUEST_MAGIC if good_magic else 0, flags, kind, cookie, offset, length)
            count = length if sent is None and length <= 70_000 else (sent or 0)
            if not _send(client.sock, head + (bytes([cookie]) * count if kind == 1 else b"")):
                break
            _drain(client.sock, 0.01)
        _drain(client.sock)
    finally:
        _hang_up(client, reset)
    assert writable_server.alive(), "the server died"
    fresh = RawClient(writable_server.host, writable_server.port)
    try:
        fresh.greet()
        fresh.go(structured=False, meta=False)
        offset = random.Random(seed).randrange(0, 4 * MiB - 4096)
        fresh.request(0, offset, 4096, cookie=5)
        assert fresh.simple_reply() == (0, 5)
        assert len(fresh.recv_exact(4096)) == 4096
        fresh.request(2)
    finally:
        fresh.close()
