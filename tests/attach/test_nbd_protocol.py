"""The NBD server against a hand-driven client: every option and command, and what real clients
never send (garbage, huge lengths, early disconnects). The server must answer by the protocol,
stay up for the next client, and never change a read-only image."""

from __future__ import annotations

import hashlib
import random
import struct
from pathlib import Path

import pytest

import vhdx

from .nbd_support import RawClient, Server

MiB = 1 << 20
ERR = 1 << 31


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nbd") / "disk.vhdx"
    rng = random.Random(1)
    with vhdx.create(path, 8 * MiB, block_size=1 * MiB) as d:
        d.pwrite(MiB, rng.randbytes(MiB))
        d.pwrite(5 * MiB + 100, rng.randbytes(1000))
    return path


@pytest.fixture(scope="module")
def server(image: Path):
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    srv = Server(image)
    yield srv
    code, err = srv.stop()
    assert code == 0, err
    assert "Traceback" not in err, err
    assert hashlib.sha256(image.read_bytes()).hexdigest() == digest  # read-only: never written


@pytest.fixture
def client(server: Server):
    c = RawClient(server.host, server.port)
    yield c
    c.close()
    assert server.alive()


def _content(image: Path, offset: int, length: int) -> bytes:
    with vhdx.open(image) as d:
        return d.pread(offset, length)


def test_handshake_flags_and_list(client: RawClient, server: Server) -> None:
    assert client.greet() & 1  # fixed newstyle
    client.option(3)
    replies = client.replies_until_final()
    assert replies[-1][1] == 1
    names = [r[2][4 : 4 + struct.unpack(">I", r[2][:4])[0]].decode() for r in replies if r[1] == 2]
    assert names == [server.export]


def test_info_unknown_export_then_go_with_the_default(client: RawClient) -> None:
    client.greet()
    name = b"nope"
    client.option(6, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    assert client.reply()[1] == ERR + 6
    flags = client.go("")
    assert flags & 2  # read-only
    assert flags & 1  # has flags


def test_export_name_option_without_and_with_zero_padding(server: Server) -> None:
    for client_flags, tail in ((3, 0), (1, 124)):
        c = RawClient(server.host, server.port)
        try:
            c.greet(client_flags)
            c.option(1, server.export.encode())
            size, flags = struct.unpack(">QH", c.recv_exact(10))
            assert size == 8 * MiB and flags & 2
            assert c.recv_exact(tail) == bytes(tail)
            c.request(0, MiB, 4096)
            assert c.simple_reply() == (0, 1)
            assert c.recv_exact(4096) == _content(server_image(server), MiB, 4096)
        finally:
            c.close()


def server_image(server: Server) -> Path:
    return Path(server.proc.args[4])


def test_metadata_context_needs_structured_replies(client: RawClient) -> None:
    client.greet()
    q = b"base:allocation"
    client.option(10, struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", len(q)) + q)
    assert client.reply()[1] == ERR + 3
    client.option(8)
    assert client.reply()[1] == 1
    client.option(9, struct.pack(">I", 0) + struct.pack(">I", 0))  # list everything
    replies = client.replies_until_final()
    assert [r[2][4:] for r in replies if r[1] == 4] == [q]


def test_unknown_option_and_starttls_are_refused_then_negotiation_goes_on(client: RawClient) -> None:
    client.greet()
    client.option(4242, b"abc")
    assert client.reply()[1] == ERR + 1
    client.option(5)
    assert client.reply()[1] & ERR
    assert client.go() & 2


def test_oversized_option_is_refused_without_reading_it_all_into_memory(client: RawClient) -> None:
    client.greet()
    client.option(6, bytes(200_000))  # over the 64 KiB limit but drained
    assert client.reply()[1] == ERR + 9
    assert client.go() & 2


def test_hostile_option_length_drops_the_connection(client: RawClient) -> None:
    client.greet()
    client.sock.sendall(struct.pack(">QII", 0x49484156454F5054, 7, 0xFFFFFFF0))
    assert client.closed_by_server()


@pytest.mark.parametrize("payload", [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"GET / HTTP/1.1\r\n\r\n"])
def test_garbage_handshake_drops_only_that_client(server: Server, payload: bytes) -> None:
    c = RawClient(server.host, server.port)
    try:
        c.recv_exact(18)
        c.sock.sendall(payload)
        assert c.closed_by_server()
    finally:
        c.close()
    d = RawClient(server.host, server.port)
    try:
        d.greet()
        assert d.go() & 2
    finally:
        d.close()


def test_structured_read_and_block_status(client: RawClient, server: Server) -> None:
    client.greet()
    flags = client.go()
    assert flags & (1 << 7)  # DF offered with structured replies
    client.request(0, MiB - 10, 30, cookie=7)
    cflags, kind, cookie, body = client.structured_chunk()
    assert (cflags & 1, kind, cookie) == (1, 1, 7)
    assert struct.unpack(">Q", body[:8])[0] == MiB - 10
    assert body[8:] == _content(server_image(server), MiB - 10, 30)
    client.request(7, 0, 8 * MiB, cookie=8)
    cflags, kind, cookie, body = client.structured_chunk()
    assert (cflags & 1, kind, cookie) == (1, 5, 8)
    ctx = struct.unpack(">I", body[:4])[0]
    assert ctx == 1
    descs = [struct.unpack(">II", body[i : i + 8]) for i in range(4, len(body), 8)]
    assert descs == [(MiB, 3), (MiB, 0), (3 * MiB, 3), (MiB, 0), (2 * MiB, 3)]
    client.request(7, 0, 8 * MiB, flags=8, cookie=9)  # REQ_ONE
    _, _, _, body = client.structured_chunk()
    assert len(body) == 4 + 8


def test_bad_reads_get_errors_and_the_connection_lives_on(client: RawClient) -> None:
    client.greet()
    client.go()
    client.request(0, 8 * MiB - 10, 20, cookie=1)  # past the end
    flags, kind, cookie, body = client.structured_chunk()
    assert kind == (1 << 15) + 1 and cookie == 1 and struct.unpack(">I", body[:4])[0] == 22
    client.request(0, 0, 0xFFFFFFFF, cookie=2)  # absurd length
    flags, kind, cookie, body = client.structured_chunk()
    assert kind == (1 << 15) + 1 and struct.unpack(">I", body[:4])[0] == 75
    client.request(0, (1 << 64) - 4096, 4096, cookie=3)  # offset overflow
    _, kind, _, body = client.structured_chunk()
    assert kind == (1 << 15) + 1
    client.request(99, 0, 0, cookie=4)  # unknown command
    assert client.simple_reply() == (22, 4)
    client.request(0, 0, 512, cookie=5)
    flags, kind, cookie, body = client.structured_chunk()
    assert kind == 1 and cookie == 5 and len(body) == 8 + 512


def test_read_only_export_refuses_every_change(client: RawClient) -> None:
    client.greet()
    client.go()
    client.request(1, 0, 4096, data=b"\xaa" * 4096, cookie=1)
    assert client.simple_reply() == (1, 1)  # EPERM
    client.request(4, 0, MiB, cookie=2)
    assert client.simple_reply() == (1, 2)
    client.request(6, 0, MiB, cookie=3)
    assert client.simple_reply() == (1, 3)
    client.request(3, cookie=4)  # FLUSH is fine
    assert client.simple_reply() == (0, 4)


def test_simple_replies_without_structured(client: RawClient, server: Server) -> None:
    client.greet()
    client.go(structured=False, meta=False)
    client.request(0, 5 * MiB, 2000, cookie=11)
    assert client.simple_reply() == (0, 11)
    assert client.recv_exact(2000) == _content(server_image(server), 5 * MiB, 2000)
    client.request(7, 0, MiB, cookie=12)  # no context negotiated
    assert client.simple_reply() == (22, 12)


def test_bad_request_magic_drops_the_connection(client: RawClient) -> None:
    client.greet()
    client.go()
    client.request(0, 0, 512, magic=0xDEADBEEF)
    assert client.closed_by_server()


def test_disconnect_mid_request_and_disc(server: Server) -> None:
    c = RawClient(server.host, server.port)
    c.greet()
    c.go()
    c.request(1, 0, 1 << 20, data=b"x" * 1000)  # promises a MiB, sends 1000 bytes, vanishes
    c.close()
    d = RawClient(server.host, server.port)
    try:
        d.greet()
        d.go()
        d.request(2)  # DISC: the server closes cleanly
        assert d.closed_by_server()
    finally:
        d.close()
    assert server.alive()


def test_writable_export_protocol_errors(tmp_path: Path) -> None:
    path = tmp_path / "w.vhdx"
    vhdx.create(path, 4 * MiB, block_size=1 * MiB).close()
    with Server(path, "--writable") as srv:
        c = RawClient(srv.host, srv.port)
        try:
            c.greet()
            flags = c.go()
            assert not flags & 2 and flags & (1 << 5) and flags & (1 << 6)
            c.request(1, 4 * MiB - 100, 200, data=bytes(200), cookie=1)
            assert c.simple_reply() == (28, 1)  # ENOSPC past the end
            c.request(1, 100, 300, data=b"\x11" * 300, flags=1, cookie=2)  # FUA
            assert c.simple_reply() == (0, 2)
            c.request(6, MiB, MiB, flags=16, cookie=3)  # FAST_ZERO not offered
            assert c.simple_reply() == (95, 3)
            c.request(6, 2 * MiB, MiB, flags=2, cookie=4)  # NO_HOLE zeroing
            assert c.simple_reply() == (0, 4)
            c.request(1, 0, 64 * MiB + 1, cookie=5)  # a write too large to drain: dropped
            assert c.closed_by_server()
        finally:
            c.close()
        code, err = srv.stop()
        assert code == 0, err
    with vhdx.open(path) as d:
        assert d.pread(100, 300) == b"\x11" * 300
        assert d.pread(0, 100) == bytes(100)
        states = {e.virtual_offset // MiB: e.state for e in d.extents()}
    assert states[2] == "data"  # NO_HOLE allocated the zeros
