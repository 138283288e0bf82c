"""``vhdx recover``: data the image holds outside its visible disk."""

from __future__ import annotations

import click

from vhdx._units import format_size
from vhdx.ops.forensics import find_hidden

from ..output import emit_json

EPILOG = """\b
Examples:
  vhdx recover evidence.vhdx                       # regions with non-zero data
  vhdx recover evidence.vhdx --all --json          # every unreferenced region, zero or not
  vhdx recover evidence.vhdx --out carved/         # ... and their bytes, one file per region

Lists the parts of the file that no structure references, cut into payload-block-sized pieces
(space left by compaction, trims, resizes or allocations a crash cut short), blocks whose BAT
entry was released but still records an offset, slack after the last structure, and reserved
areas (header, region table, metadata table, BAT tail) holding non-zero bytes. Offsets are file
offsets. The image is opened read-only and never written. JSON (snake_case keys, the shape
scripts rely on): {"regions": [{"file_offset", "length", "kind", "structure", "nonzero",
"nonzero_bytes", "first_nonzero", "dumped"}, ...], "bytes_unreferenced", "bytes_nonzero", ...}.
"""


@click.command(epilog=EPILOG, short_help="List (and dump) data outside the visible disk.")
@click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))
@click.option("--out", "out_dir", type=click.Path(path_type=str, file_okay=False), default=None,
              help="Write each region holding non-zero bytes into this folder.")
@click.option("--all", "include_zero", is_flag=True, help="Also list regions that hold only zeros.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(image: str, out_dir: str | None, include_zero: bool, as_json: bool) -> None:
    """List the regions of IMAGE that no structure references, and non-zero reserved bytes."""
    result = find_hidden(image, out_dir=out_dir, include_zero=include_zero)
    if as_json:
        emit_json(result.as_dict())
        return
    click.echo(f"{image}: {format_size(result.bytes_unreferenced)} unreferenced, "
               f"{result.bytes_nonzero} non-zero bytes outside the visible disk")
    for r in result.regions:
        state = f"{r.nonzero_bytes} non-zero bytes from 0x{r.first_nonzero:x}" if r.nonzero else "zeros"
        dumped = f" -> {r.dumped}" if r.dumped else ""
        click.echo(f"  0x{r.file_offset:012x}  {format_size(r.length):>9}  {r.kind:<12}  {r.structure}: {state}{dumped}")
    if result.truncated:
        click.echo("  (more regions not listed)")
