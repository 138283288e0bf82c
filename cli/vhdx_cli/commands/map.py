"""``vhdx map``: which virtual ranges hold data, which read as zeros, and where the data lies."""

from __future__ import annotations

import json

import click

from .. import output
from ..options import IMAGE_ARGUMENT, clamp_range, open_image, parent_options, range_options

EPILOG = """\b
Examples:
  vhdx map disk.vhdx
  vhdx map --json disk.vhdx
  vhdx map --json --offset 1G --length 256M disk.vhdx
  vhdx map --json child.avhdx --parent-search /vms/base

\b
--json prints what qemu-img map --output=json prints, one object per run:
  start, length   the virtual byte range
  depth           the layer that answers (0 = IMAGE, 1 = its parent, ...)
  present         some layer allocates the range (false: no layer does; reads as zeros)
  zero            the range reads as zeros
  data            the range is stored in a file, at offset (only present when data is true)
Unlike qemu-img, whose VHDX driver reports the whole disk as data, the map comes from the
BAT and the sector bitmaps. The text form lists the data runs only, in hex, with the file
that holds each.
"""


@click.command(epilog=EPILOG, short_help="Show the allocation map (qemu-img map format).")
@IMAGE_ARGUMENT
@click.option("--json", "as_json", is_flag=True, help="Print qemu-img map compatible JSON.")
@range_options
@parent_options
def command(image: str, as_json: bool, offset: int, length: int | None, parent: str | None,
            parent_search: tuple[str, ...], ignore_id_mismatch: bool) -> None:
    """Show the allocation map of IMAGE (and its parents)."""
    with open_image(image, parent=parent, parent_search=parent_search,
                    ignore_id_mismatch=ignore_id_mismatch) as disk:
        start, count = clamp_range(image, disk.size, offset, length)
        extents = disk.extents(start, count)
        if as_json:
            # Streamed one object per line (as qemu-img does): a 64 TiB disk can have millions of runs.
            click.echo("[", nl=False)
            for i, extent in enumerate(extents):
                click.echo(("" if i == 0 else ",\n") + json.dumps(output.map_entry(extent)), nl=False)
            click.echo("]")
        else:
            output.emit_lines(output.map_lines(extents, [layer.name for layer in disk.chain]))
