"""A pure-Python NBD server (asyncio) for VHDX virtual disks and their chains.

It speaks the fixed newstyle handshake with the options real clients send (GO, INFO, LIST,
EXPORT_NAME, ABORT, STRUCTURED_REPLY, LIST/SET_META_CONTEXT with ``base:allocation``) and the
commands READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, BLOCK_STATUS and DISC. Every connection runs
in the one event loop thread, so the requests of all clients reach the disk one at a time: the
engine is never entered twice, a FLUSH from any client makes every acknowledged write durable,
and the export can offer CAN_MULTI_CONN.

Hostile or broken clients are normal: every length is checked before anything is allocated or
read, option and request data beyond the limits are refused (or the connection is dropped
when the stream can no longer be trusted, e.g. a wrong magic), a read-only export refuses every
change with EPERM, and a client that vanishes mid-request only loses its own connection. The
image is changed only through ``VirtualDisk``'s journaled writes, so a dropped connection or a
killed server leaves it consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import vhdx
from vhdx.engine.mapping import DATA

from . import nbd_protocol as p

log = logging.getLogger("vhdx.nbd")

MAX_OPTION_LENGTH = 64 * 1024  # option data we read and parse; anything longer is refused
MAX_OPTION_DISCARD = 16 * 1024 * 1024  # longer than this and the stream is dropped, not drained
MAX_OPTIONS = 1024  # a client that haggles forever is disconnected
MAX_REQUEST = 32 * 1024 * 1024  # largest READ/WRITE payload (advertised as the maximum block size)
MAX_WRITE_DISCARD = 64 * 1024 * 1024  # a longer WRITE payload is not drained: the connection is dropped
PREFERRED_BLOCK = 4096
MAX_EXTENTS = 4096  # block-status descriptors per reply
HANDSHAKE_TIMEOUT = 30.0  # seconds a client may take to finish negotiating
BASE_ALLOCATION_ID = 1  # our one metadata context
COPY_CHUNK = 4 * 1024 * 1024  # zero writes go through buffers of at most this size


class ProtocolError(Exception):
    """The peer broke the protocol in a way that leaves the stream unusable: drop the connection."""


@dataclass
class Export:
    """One disk offered under a name."""

    name: str
    disk: vhdx.VirtualDisk
    writable: bool = False
    description: str = ""

    @property
    def size(self) -> int:
        return self.disk.size

    def transmission_flags(self, structured: bool) -> int:
        flags = p.TFLAG_HAS_FLAGS | p.TFLAG_SEND_FLUSH | p.TFLAG_SEND_FUA | p.TFLAG_CAN_MULTI_CONN
        if self.writable:
            flags |= p.TFLAG_SEND_TRIM | p.TFLAG_SEND_WRITE_ZEROES
        else:
            flags |= p.TFLAG_READ_ONLY
        if structured:
            flags |= p.TFLAG_SEND_DF  # every read reply is a single chunk anyway
        return flags


@dataclass
class ServerStats:
    connections: int = 0
    active: int = 0
    requests: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    protocol_errors: int = 0


class _Refused(Exception):
    """An option reply error: the option is answered with ``code`` and negotiation goes on."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class _Session:
    structured: bool = False
    contexts: dict[int, str] = field(default_factory=dict)
    contexts_export: str | None = None
    export: Export | None = None


class NbdServer:
    """Serves ``exports`` (by name; the first one also answers the empty name)."""

    def __init__(self, exports: Iterable[Export]) -> None:
        self.exports: dict[str, Export] = {}
        for export in exports:
            if export.name in self.exports:
                raise ValueError(f"two exports named {export.name!r}")
            self.exports[export.name] = export
        if not self.exports:
            raise ValueError("nothing to serve")
        self.default = next(iter(self.exports.values()))
        self.stats = ServerStats()
        self._servers: list[asyncio.AbstractServer] = []

    # --- lifecycle ---------------------------------------------------------------------------------
    async def listen_tcp(self, host: str, port: int) -> list[tuple[str, int]]:
        """Start listening; return the (host, port) pairs bound (port 0 picks a free one)."""
        server = await asyncio.start_server(self.handle, host, port, reuse_address=True)
        self._servers.append(server)
        return [s.getsockname()[:2] for s in server.sockets]

    async def listen_unix(self, path: str) -> None:
        server = await asyncio.start_unix_server(self.handle, path)
        self._servers.append(server)

    async def serve_forever(self) -> None:
        await asyncio.gather(*(s.serve_forever() for s in self._servers))

    async def close(self) -> None:
        for s in self._servers:
            s.close()
        for s in self._servers:
            with contextlib.suppress(Exception):
                await s.wait_closed()
        self._servers.clear()

    def flush_all(self) -> None:
        for export in self.exports.values():
            if export.writable:
                export.disk.flush()

    # --- one connection ------------------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or writer.get_extra_info("sockname") or "?"
        self.stats.connections += 1
        self.stats.active += 1
        try:
            session = await asyncio.wait_for(self._handshake(reader, writer), HANDSHAKE_TIMEOUT)
            if session is not None and session.export is not None:
                await self._transmission(reader, writer, session)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError, TimeoutError):
            log.debug("client %s went away", peer)
        except ProtocolError as err:
            self.stats.protocol_errors += 1
            log.info("dropping client %s: %s", peer, err)
        except vhdx.VhdxError as err:
            # The image itself failed (a parent vanished, a read error); the other clients go on.
            log.error("client %s: %s", peer, err)
        finally:
            self.stats.active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # --- handshake (fixed newstyle) -------------------------------------------------------------------
    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Session | None:
        writer.write(p.HANDSHAKE.pack(p.NBDMAGIC, p.IHAVEOPT, p.FLAG_FIXED_NEWSTYLE | p.FLAG_NO_ZEROES))
        await writer.drain()
        (client_flags,) = p.CLIENT_FLAGS.unpack(await reader.readexactly(p.CLIENT_FLAGS.size))
        if client_flags & ~p.KNOWN_CLIENT_FLAGS or not client_flags & p.FLAG_FIXED_NEWSTYLE:
            raise ProtocolError(f"unsupported client flags 0x{client_flags:x}")
        no_zeroes = bool(client_flags & p.FLAG_NO_ZEROES)
        session = _Session()
        for _ in range(MAX_OPTIONS):
            magic, option, length = p.OPTION_HEADER.unpack(await reader.readexactly(p.OPTION_HEADER.size))
            if magic != p.IHAVEOPT:
                raise ProtocolError(f"bad option magic 0x{magic:x}")
            if length > MAX_OPTION_LENGTH:
                if length > MAX_OPTION_DISCARD:
                    raise ProtocolError(f"option {option} with {length} bytes of data")
                await _discard(reader, length)
                await self._reply(writer, option, p.REP_ERR_TOO_BIG, b"option data too long")
                continue
            data = await reader.readexactly(length)
            if option == p.OPT_EXPORT_NAME:
                export = self._find(data.decode("utf-8", "replace"))
                if export is None:
                    raise ProtocolError("unknown export requested with NBD_OPT_EXPORT_NAME")
                reply = p.EXPORT_NAME_REPLY.pack(export.size, export.transmission_flags(False))
                writer.write(reply if no_zeroes else reply + bytes(p.EXPORT_NAME_PADDING))
                await writer.drain()
                session.structured = False  # EXPORT_NAME ends negotiation with simple replies only
                session.contexts.clear()
                session.export = export
                return session
            if option == p.OPT_ABORT:
                await self._reply(writer, option, p.REP_ACK)
                return None
            try:
                done = await self._option(writer, session, option, data)
            except _Refused as refused:
                await self._reply(writer, option, refused.code, str(refused).encode())
                continue
            if done:
                return session
        raise ProtocolError("too many options")

    async def _option(self, writer: asyncio.StreamWriter, session: _Session, option: int, data: bytes) -> bool:
        """Answer one option; True when negotiation is over (GO)."""
        if option == p.OPT_LIST:
            if data:
                raise _Refused(p.REP_ERR_INVALID, "NBD_OPT_LIST takes no data")
            for name, export in self.exports.items():
                encoded = name.encode()
                await self._reply(writer, option, p.REP_SERVER, p.U32.pack(len(encoded)) + encoded
                                  + export.description.encode())
            await self._reply(writer, option, p.REP_ACK)
            return False
        if option == p.OPT_STRUCTURED_REPLY:
            if data:
                raise _Refused(p.REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data")
            session.structured = True
            await self._reply(writer, option, p.REP_ACK)
            return False
        if option in (p.OPT_INFO, p.OPT_GO):
            name, requests = _parse_info_request(data)
            export = self._find(name)
            if export is None:
                raise _Refused(p.REP_ERR_UNKNOWN, f"no export named {name!r}")
            await self._reply(writer, option, p.REP_INFO,
                              p.INFO_EXPORT_BODY.pack(p.INFO_EXPORT, export.size,
                                                      export.transmission_flags(session.structured)))
            if p.INFO_NAME in requests:
                await self._reply(writer, option, p.REP_INFO, p.U16.pack(p.INFO_NAME) + export.name.encode())
            if p.INFO_DESCRIPTION in requests and export.description:
                await self._reply(writer, option, p.REP_INFO,
                                  p.U16.pack(p.INFO_DESCRIPTION) + export.description.encode())
            await self._reply(writer, option, p.REP_INFO,
                              p.INFO_BLOCK_SIZE_BODY.pack(p.INFO_BLOCK_SIZE, 1, PREFERRED_BLOCK, MAX_REQUEST))
            await self._reply(writer, option, p.REP_ACK)
            if option == p.OPT_GO:
                session.export = export
                if session.contexts_export is not None and session.contexts_export != export.name:
                    session.contexts.clear()  # contexts were negotiated for another export
                return True
            return False
        if option in (p.OPT_LIST_META_CONTEXT, p.OPT_SET_META_CONTEXT):
            if not session.structured:
                raise _Refused(p.REP_ERR_INVALID, "metadata contexts need structured replies first")
            name, queries = _parse_meta_request(data)
            if self._find(name) is None:
                raise _Refused(p.REP_ERR_UNKNOWN, f"no export named {name!r}")
            listing = option == p.OPT_LIST_META_CONTEXT
            chosen = [q for q in queries if q == p.META_BASE_ALLOCATION or (listing and q == "base:")]
            if listing and not queries:
                chosen = [p.META_BASE_ALLOCATION]
            if not listing:
                session.contexts = {}
                session.contexts_export = name or self.default.name
            for _query in dict.fromkeys(chosen):
                context_id = 0 if listing else BASE_ALLOCATION_ID
                await self._reply(writer, option, p.REP_META_CONTEXT,
                                  p.U32.pack(context_id) + p.META_BASE_ALLOCATION.encode())
                if not listing:
                    session.contexts[BASE_ALLOCATION_ID] = p.META_BASE_ALLOCATION
            await self._reply(writer, option, p.REP_ACK)
            return False
        if option == p.OPT_STARTTLS:
            raise _Refused(p.REP_ERR_POLICY, "TLS is not offered (serve on loopback or a Unix socket)")
        raise _Refused(p.REP_ERR_UNSUP, f"option {option} is not supported")

    def _find(self, name: str) -> Export | None:
        return self.default if name == "" else self.exports.get(name)

    async def _reply(self, writer: asyncio.StreamWriter, option: int, kind: int, data: bytes = b"") -> None:
        writer.write(p.OPTION_REPLY.pack(p.OPTION_REPLY_MAGIC, option, kind, len(data)) + data)
        await writer.drain()

    # --- transmission ------------------------------------------------------------------------------------
    async def _transmission(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: _Session) -> None:
        export = session.export
        assert export is not None
        disk = export.disk
        size = export.size
        structured = session.structured
        while True:
            magic, flags, kind, cookie, offset, length = p.REQUEST.unpack(await reader.readexactly(p.REQUEST.size))
            if magic != p.REQUEST_MAGIC:
                raise ProtocolError(f"bad request magic 0x{magic:x}")
            self.stats.requests += 1
            in_range = offset + length <= size
            if kind == p.CMD_READ:
                if length > MAX_REQUEST:
                    await self._error(writer, cookie, kind, structured, p.EOVERFLOW if structured else p.EINVAL,
                                      f"read of {length} bytes is over the {MAX_REQUEST}-byte maximum")
                elif not in_range:
                    await self._error(writer, cookie, kind, structured, p.EINVAL,
                                      f"read at {offset}+{length} passes the end of the {size}-byte disk")
                else:
                    data = disk.pread(offset, length) if length else b""
                    self.stats.bytes_read += length
                    if structured:
                        writer.write(p.STRUCTURED_REPLY.pack(p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE,
                                                             p.REPLY_TYPE_OFFSET_DATA, cookie, 8 + length)
                                     + p.OFFSET_PREFIX.pack(offset))
                    else:
                        writer.write(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, cookie))
                    writer.write(data)
            elif kind == p.CMD_WRITE:
                if length > MAX_REQUEST:
                    if length > MAX_WRITE_DISCARD:
                        raise ProtocolError(f"write of {length} bytes")
                    await _discard(reader, length)
                    await self._error(writer, cookie, kind, structured, p.EINVAL,
                                      f"write of {length} bytes is over the {MAX_REQUEST}-byte maximum")
                    continue
                data = await reader.readexactly(length)
                if not export.writable:
                    await self._error(writer, cookie, kind, structured, p.EPERM, "the export is read-only")
                elif not in_range:
                    await self._error(writer, cookie, kind, structured, p.ENOSPC,
                                      f"write at {offset}+{length} passes the end of the {size}-byte disk")
                else:
                    disk.pwrite(offset, data)
                    self.stats.bytes_written += length
                    if flags & p.CMDFLAG_FUA:
                        disk.flush()
                    self._ok(writer, cookie)
            elif kind == p.CMD_FLUSH:
                if export.writable:
                    disk.flush()
                self._ok(writer, cookie)
            elif kind in (p.CMD_TRIM, p.CMD_WRITE_ZEROES):
                if not export.writable:
                    await self._error(writer, cookie, kind, structured, p.EPERM, "the export is read-only")
                elif not in_range:
                    await self._error(writer, cookie, kind, structured, p.ENOSPC,
                                      f"range {offset}+{length} passes the end of the {size}-byte disk")
                elif kind == p.CMD_WRITE_ZEROES and flags & p.CMDFLAG_FAST_ZERO:
                    await self._error(writer, cookie, kind, structured, p.ENOTSUP, "fast zeroing is not offered")
                else:
                    if kind == p.CMD_TRIM:
                        disk.discard(offset, length)
                    elif flags & p.CMDFLAG_NO_HOLE:
                        _write_zero_bytes(disk, offset, length)
                    else:
                        disk.write_zeroes(offset, length)
                    if flags & p.CMDFLAG_FUA:
                        disk.flush()
                    self._ok(writer, cookie)
            elif kind == p.CMD_BLOCK_STATUS:
                if not structured or BASE_ALLOCATION_ID not in session.contexts:
                    await self._error(writer, cookie, kind, structured, p.EINVAL, "no metadata context negotiated")
                elif length == 0 or not in_range:
                    await self._error(writer, cookie, kind, structured, p.EINVAL,
                                      f"block status of {offset}+{length} on a {size}-byte disk")
                else:
                    body = _block_status(disk, offset, length, one=bool(flags & p.CMDFLAG_REQ_ONE))
                    writer.write(p.STRUCTURED_REPLY.pack(p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE,
                                                         p.REPLY_TYPE_BLOCK_STATUS, cookie, 4 + len(body))
                                 + p.U32.pack(BASE_ALLOCATION_ID) + body)
            elif kind == p.CMD_DISC:
                if export.writable:
                    disk.flush()
                await writer.drain()
                return
            else:
                await self._error(writer, cookie, kind, structured, p.EINVAL, f"command {kind} is not supported")
            # Flow control: waits only while the client is not reading its replies (the
            # transport sends at once what the socket takes).
            await writer.drain()

    def _ok(self, writer: asyncio.StreamWriter, cookie: int) -> None:
        writer.write(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, cookie))

    async def _error(self, writer: asyncio.StreamWriter, cookie: int, kind: int, structured: bool, error: int,
                     message: str) -> None:
        log.debug("%s error %d: %s", p.COMMAND_NAMES.get(kind, kind), error, message)
        if structured and kind in (p.CMD_READ, p.CMD_BLOCK_STATUS):
            # With structured replies a READ (and BLOCK_STATUS) must be answered with chunks.
            text = message.encode()[:4096]
            writer.write(p.STRUCTURED_REPLY.pack(p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE, p.REPLY_TYPE_ERROR,
                                                 cookie, p.ERROR_BODY.size + len(text))
                         + p.ERROR_BODY.pack(error, len(text)) + text)
        else:
            writer.write(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, error, cookie))
        await writer.drain()


def _parse_info_request(data: bytes) -> tuple[str, set[int]]:
    """NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, u16 requests."""
    if len(data) < 6:
        raise _Refused(p.REP_ERR_INVALID, "option data too short")
    (name_length,) = p.U32.unpack_from(data, 0)
    if 4 + name_length + 2 > len(data):
        raise _Refused(p.REP_ERR_INVALID, "export name length past the option data")
    name = data[4 : 4 + name_length].decode("utf-8", "replace")
    (count,) = p.U16.unpack_from(data, 4 + name_length)
    rest = data[4 + name_length + 2 :]
    if len(rest) != 2 * count:
        raise _Refused(p.REP_ERR_INVALID, "information request count does not match the option length")
    return name, {p.U16.unpack_from(rest, 2 * i)[0] for i in range(count)}


def _parse_meta_request(data: bytes) -> tuple[str, list[str]]:
    """LIST/SET_META_CONTEXT data: u32 name length, name, u32 query count, (u32 length, query)*."""
    if len(data) < 8:
        raise _Refused(p.REP_ERR_INVALID, "option data too short")
    (name_length,) = p.U32.unpack_from(data, 0)
    pos = 4 + name_length
    if pos + 4 > len(data):
        raise _Refused(p.REP_ERR_INVALID, "export name length past the option data")
    name = data[4:pos].decode("utf-8", "replace")
    (count,) = p.U32.unpack_from(data, pos)
    pos += 4
    queries = []
    for _ in range(count):
        if pos + 4 > len(data):
            raise _Refused(p.REP_ERR_INVALID, "query count past the option data")
        (n,) = p.U32.unpack_from(data, pos)
        pos += 4
        if pos + n > len(data):
            raise _Refused(p.REP_ERR_INVALID, "query length past the option data")
        queries.append(data[pos : pos + n].decode("utf-8", "replace"))
        pos += n
    if pos != len(data):
        raise _Refused(p.REP_ERR_INVALID, "trailing bytes after the queries")
    return name, queries


def _block_status(disk: vhdx.VirtualDisk, offset: int, length: int, *, one: bool) -> bytes:
    """base:allocation descriptors for [offset, offset + length), from the BAT (and the chain):
    data -> 0; zero and unallocated (reads as zeros) -> HOLE | ZERO."""
    out = bytearray()
    limit = 1 if one else MAX_EXTENTS
    count = 0
    pending_flags = -1
    pending_length = 0
    cap = 0xFFFFF000  # a descriptor length is a u32; keep it 4 KiB-aligned below that
    for extent in disk.extents(offset, length):
        flags = 0 if extent.state == DATA else p.STATE_HOLE | p.STATE_ZERO
        if flags == pending_flags and pending_length + extent.length <= cap:
            pending_length += extent.length
            continue
        if pending_flags >= 0:
            out += p.BLOCK_DESCRIPTOR.pack(pending_length, pending_flags)
            count += 1
            if count >= limit:
                return bytes(out)
        if extent.length > cap:
            # Longer than one descriptor can say: report its first part and stop here (the
            # client asks again from where the reply ends).
            return bytes(out + p.BLOCK_DESCRIPTOR.pack(cap, flags))
        pending_flags, pending_length = flags, extent.length
    if pending_flags >= 0:
        out += p.BLOCK_DESCRIPTOR.pack(pending_length, pending_flags)
    return bytes(out)


def _write_zero_bytes(disk: vhdx.VirtualDisk, offset: int, length: int) -> None:
    """WRITE_ZEROES with NO_HOLE: the zeros are written as data (storage allocated)."""
    chunk = bytes(min(length, COPY_CHUNK))
    pos, end = offset, offset + length
    while pos < end:
        n = min(len(chunk), end - pos)
        disk.pwrite(pos, memoryview(chunk)[:n])
        pos += n


async def _discard(reader: asyncio.StreamReader, length: int) -> None:
    while length > 0:
        chunk = await reader.readexactly(min(length, 1 << 20))
        length -= len(chunk)


__all__ = ["Export", "NbdServer", "ProtocolError", "ServerStats"]
