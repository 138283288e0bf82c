"""``vhdx serve``: export a virtual disk (and its chain) over NBD, in pure Python."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import click

import vhdx

from ..attach.nbd import Export, NbdServer
from ..errors import CommandError
from ..options import parent_options

DEFAULT_PORT = 10809  # the port IANA assigned to NBD

EPILOG = """\b
Examples:
  vhdx serve disk.vhdx                              # read-only, nbd://127.0.0.1:10809
  vhdx serve child.avhdx --bind 127.0.0.1:0         # any free port; the URL is printed
  vhdx serve disk.vhdx --writable --export-name disk
  vhdx serve disk.vhdx --socket /run/disk.sock      # nbd+unix:///?socket=/run/disk.sock
  nbdinfo --map nbd://127.0.0.1:10809               # allocation map, answered from the BAT
  nbdcopy nbd://127.0.0.1:10809 disk.raw            # copies only the allocated ranges
  qemu-img convert -O qcow2 nbd://127.0.0.1:10809 disk.qcow2

The first line on stdout is the URL to connect to, printed once the server listens. The export
is read-only unless --writable; writes go through the image's log, so a client or server that
dies mid-write leaves a consistent image. A differencing image serves its whole chain (writes
land in the child only). The server binds to loopback unless told otherwise: NBD has no
authentication, so binding to another address exposes the disk to that network. It runs
until interrupted (Ctrl-C or SIGTERM), then flushes and closes the image.
"""


@click.command(epilog=EPILOG, short_help="Serve an image over NBD (nbdinfo, nbdcopy, qemu, nbd-client).")
@click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))
@click.option("--bind", "bind", default=f"127.0.0.1:{DEFAULT_PORT}", show_default=True, metavar="HOST:PORT",
              help="Address to listen on (port 0: any free port).")
@click.option("--socket", "socket_path", type=click.Path(path_type=str), default=None,
              help="Listen on this Unix socket instead of TCP.")
@click.option("--read-only/--writable", "read_only", default=True, show_default=True,
              help="Refuse or accept writes, trims and zeroing from clients.")
@click.option("--export-name", default=None, help="Name of the export (default: the image's file name).")
@click.option("--pid-file", type=click.Path(path_type=str), default=None,
              help="Write the server's process id here once it listens (removed on exit).")
@click.option("-v", "--verbose", is_flag=True, help="Log connections and protocol errors on stderr.")
@parent_options
def command(image: str, bind: str, socket_path: str | None, read_only: bool, export_name: str | None,
            pid_file: str | None, verbose: bool, parent: str | None, parent_search: tuple[str, ...],
            ignore_id_mismatch: bool) -> None:
    """Serve IMAGE's virtual disk over the NBD protocol until interrupted."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="vhdx serve: %(message)s")
    host, port = (None, 0) if socket_path else parse_bind(bind)
    try:
        disk = vhdx.open(image, "rb" if read_only else "r+b", parent=parent, parent_search=parent_search,
                         ignore_id_mismatch=ignore_id_mismatch)
    except ValueError as err:
        raise CommandError(str(err)) from None
    name = export_name if export_name is not None else Path(image).name
    export = Export(name, disk, writable=not read_only, description=f"{disk.disk_type} VHDX {Path(image).name}")
    try:
        asyncio.run(_serve(NbdServer([export]), host, port, socket_path, pid_file))
    finally:
        disk.close()


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``:PORT``."""
    host, sep, port_text = bind.rpartition(":")
    if not sep:
        host, port_text = bind, str(DEFAULT_PORT)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise CommandError(f"--bind {bind!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise CommandError(f"--bind {bind!r}: port out of range")
    return host, port


async def _serve(server: NbdServer, host: str | None, port: int, socket_path: str | None, pid_file: str | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    name = server.default.name
    try:
        if socket_path:
            await server.listen_unix(socket_path)
            url = f"nbd+unix:///{name}?socket={socket_path}"
        else:
            assert host is not None
            bound = await server.listen_tcp(host, port)
            bound_host, bound_port = bound[0]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            url = f"nbd://{shown}:{bound_port}/{name}"
    except OSError as err:
        where = socket_path or f"{host}:{port}"
        raise CommandError(f"cannot listen on {where}: {err.strerror or err}") from None
    if pid_file:
        Path(pid_file).write_text(f"{os.getpid()}\n")
    click.echo(url)
    sys.stdout.flush()
    serving = asyncio.ensure_future(server.serve_forever())
    try:
        await stop.wait()
    finally:
        serving.cancel()
        await server.close()
        server.flush_all()
        if pid_file:
            Path(pid_file).unlink(missing_ok=True)
        if socket_path:
            Path(socket_path).unlink(missing_ok=True)
