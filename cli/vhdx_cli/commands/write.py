"""``vhdx write``: copy a byte stream into an image at an offset."""

from __future__ import annotations

import sys

import click

import vhdx

from ..errors import CommandError
from ..options import SIZE, parent_options

CHUNK_SIZE = 8 << 20

EPILOG = """\b
Examples:
  vhdx write disk.vhdx --offset 0 mbr.bin
  dd if=/dev/urandom bs=1M count=4 | vhdx write disk.vhdx --offset 1G -
  vhdx write disk.vhdx --offset 1M --zero --length 64M     # zero a range (ZERO blocks)
  vhdx write disk.vhdx --offset 1M --discard --length 64M  # let a range go (UNMAPPED blocks)

The image is changed through its log: a crash at any moment leaves it consistent. Writing past
the end of the virtual disk is an error (the disk does not grow; see resize).
"""


@click.command(epilog=EPILOG, short_help="Write a byte stream into an image.")
@click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))
@click.argument("source", metavar="[FILE|-]", type=click.Path(path_type=str, allow_dash=True), default="-")
@click.option("--offset", type=SIZE, required=True, help="Virtual byte offset to write at (suffixes K, M, G, T).")
@click.option("--length", type=SIZE, default=None, help="With --zero/--discard: bytes to zero or discard; "
              "with a FILE: write at most this many bytes.")
@click.option("--zero", "zero", is_flag=True, help="Zero --length bytes at --offset instead of copying a stream.")
@click.option("--discard", is_flag=True, help="Discard --length bytes at --offset.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@parent_options
def command(image: str, source: str, offset: int, length: int | None, zero: bool, discard: bool, as_json: bool,
            parent: str | None, parent_search: tuple[str, ...], ignore_id_mismatch: bool) -> None:
    """Write the bytes of FILE (or stdin, '-') into IMAGE at --offset."""
    if zero and discard:
        raise CommandError("--zero and --discard exclude each other")
    if (zero or discard) and length is None:
        raise CommandError("--zero and --discard need --length")
    try:
        disk = vhdx.open(image, "r+b", parent=parent, parent_search=parent_search,
                         ignore_id_mismatch=ignore_id_mismatch)
    except ValueError as err:  # IMAGE names a symbolic link, a device, a FIFO, ...: the user's input
        raise CommandError(str(err)) from err
    with disk:
        if offset > disk.size:
            raise CommandError(f"{image}: offset {offset} is past the end of the {disk.size}-byte disk")
        written = 0
        if zero or discard:
            assert length is not None
            if offset + length > disk.size:
                raise CommandError(f"{image}: range {offset}+{length} passes the end of the {disk.size}-byte disk")
            (disk.write_zeroes if zero else disk.discard)(offset, length)
            written = length
        else:
            stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
            try:
                buffer = memoryview(bytearray(CHUNK_SIZE))
                limit = length
                disk.seek(offset)
                while limit is None or written < limit:
                    want = len(buffer) if limit is None else min(len(buffer), limit - written)
                    n = stream.readinto(buffer[:want])
                    if not n:
                        break
                    if disk.tell() + n > disk.size:
                        raise CommandError(f"{image}: the input passes the end of the {disk.size}-byte disk "
                                           f"at offset {disk.tell() + n}")
                    disk.write(buffer[:n])
                    written += n
            finally:
                if stream is not sys.stdin.buffer:
                    stream.close()
        disk.flush()
    if as_json:
        import json

        click.echo(json.dumps({"image": image, "offset": offset, "bytes": written,
                               "operation": "zero" if zero else "discard" if discard else "write"}))
