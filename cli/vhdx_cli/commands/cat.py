"""``vhdx cat``: the virtual disk's bytes on stdout."""

from __future__ import annotations

import sys

import click

from vhdx.engine.buffers import io_buffer

from ..errors import CommandError
from ..options import IMAGE_ARGUMENT, clamp_range, open_image, parent_options, range_options

# Large enough that per-call overhead vanishes next to the copy, small enough to stay cache- and
# memory-friendly; a multiple of every block and sector size.
CHUNK_SIZE = 8 << 20

EPILOG = """\b
Examples:
  vhdx cat disk.vhdx > disk.raw
  vhdx cat disk.vhdx --length 512 | xxd | head        # the MBR
  vhdx cat disk.vhdx --offset 1M --length 64K > part.bin
  vhdx cat child.avhdx --parent-search /vms/base | sha256sum

Sizes accept K, M, G and T suffixes (binary units). A length reaching past the end is clipped;
an offset past the end is an error. Refuses to write to a terminal.
"""


@click.command(epilog=EPILOG, short_help="Write the virtual disk bytes to stdout.")
@IMAGE_ARGUMENT
@range_options
@parent_options
def command(image: str, offset: int, length: int | None, parent: str | None, parent_search: tuple[str, ...],
            ignore_id_mismatch: bool) -> None:
    """Write the virtual disk of IMAGE (or a byte range of it) to stdout."""
    out = sys.stdout.buffer
    if sys.stdout.isatty():
        raise CommandError("refusing to write disk contents to a terminal; redirect or pipe stdout")
    with open_image(image, parent=parent, parent_search=parent_search,
                    ignore_id_mismatch=ignore_id_mismatch) as disk:
        start, remaining = clamp_range(image, disk.size, offset, length)
        buffer = io_buffer(min(CHUNK_SIZE, remaining))
        disk.seek(start)
        while remaining:
            n = disk.readinto(buffer[: min(len(buffer), remaining)])
            if not n:  # cannot happen inside the clamped range; guard against looping forever
                raise CommandError(f"{image}: unexpected end of the virtual disk at offset {disk.tell()}")
            out.write(buffer[:n])
            remaining -= n
        out.flush()
