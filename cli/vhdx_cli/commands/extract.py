"""``vhdx extract``: one partition of the virtual disk into a raw file."""

from __future__ import annotations

import click

from vhdx._units import format_size
from vhdx.ops.partitions import extract_partition

from ..errors import CommandError
from ..options import IMAGE_ARGUMENT, open_image, parent_options
from ..output import emit_json, operation_document
from ..progress import progress_callback, progress_option

EPILOG = """\b
Examples:
  vhdx partitions disk.vhdx                        # find the number
  vhdx extract disk.vhdx --partition 1 efi.img
  vhdx extract evidence.vhdx --partition 5 logical5.dd --json

The output is a sparse raw file: only the ranges the image stores are written, the rest are
holes. It is written under a temporary name and renamed when complete; an existing OUT is
replaced only with --force. The image is opened read-only.
"""


@click.command(epilog=EPILOG, short_help="Write one partition to a raw file (streamed, sparse).")
@IMAGE_ARGUMENT
@click.argument("out", metavar="OUT", type=click.Path(path_type=str, dir_okay=False))
@click.option("-p", "--partition", "index", type=int, required=True, help="Partition number (see 'vhdx partitions').")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@progress_option
@parent_options
def command(image: str, out: str, index: int, force: bool, as_json: bool, quiet: bool, show_progress: bool | None,
            parent: str | None, parent_search: tuple[str, ...], ignore_id_mismatch: bool) -> None:
    """Extract partition N of IMAGE's virtual disk into the raw file OUT."""
    with open_image(image, parent=parent, parent_search=parent_search, ignore_id_mismatch=ignore_id_mismatch) as disk:
        try:
            with progress_callback(show_progress, "extracting") as callback:
                result = extract_partition(disk, index, out, overwrite=force, progress=callback)
        except FileExistsError:
            raise CommandError(f"{out}: file exists (use --force to replace it)") from None
    if as_json:
        emit_json(operation_document(result))
    elif not quiet:
        click.echo(f"Extracted partition {index} of '{image}' ({format_size(result.length)} at offset {result.start}) "
                   f"to '{out}': {format_size(result.bytes_written)} written, the rest left as holes")
