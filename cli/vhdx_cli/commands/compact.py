"""``vhdx compact``: give back the file space of blocks that hold nothing, in place
(Optimize-VHD -Mode Full)."""

from __future__ import annotations

import click

from vhdx._units import format_size
from vhdx.ops.compact import CompactResult, compact

from ..errors import CommandError
from ..options import IMAGE_ARGUMENT, parent_options
from ..output import emit_json, operation_document
from ..progress import progress_callback, progress_option

EPILOG = """\b
Examples:
  vhdx compact disk.vhdx
  vhdx compact --json disk.vhdx | jq '."bytes-reclaimed"'
  vhdx compact --no-zero-scan disk.vhdx            # only trimmed/zeroed blocks, no reading
  vhdx compact child.avhdx --parent-search /vms/base
  vhdx compact --convert fixed.vhdx                # a fixed image becomes dynamic

Blocks that read all zero (found by reading every allocated block, unless --no-zero-scan) and
blocks already trimmed or zeroed give their space back; the remaining blocks are moved down into
the holes and the file is cut after the last one. What the disk reads does not change, and
neither does its DataWriteGuid, so differencing children of IMAGE stay linked. In a differencing
IMAGE, released blocks become ZERO blocks (they keep hiding the parent's data); the parent is
only read.

The work is done in place and through the log: interrupted at any moment (even by a power cut),
IMAGE stays consistent and reads the same; run the command again to finish.

Fixed images keep every block by definition and are refused; --convert replaces IMAGE by a
dynamic copy (written next to it, renamed over it when complete; its disk id and DataWriteGuid
are kept, unknown regions and user metadata are not).
"""


@click.command(epilog=EPILOG, short_help="Reclaim unused space of an image in place.")
@IMAGE_ARGUMENT
@click.option("--no-zero-scan", "no_zero_scan", is_flag=True,
              help="Do not read allocated blocks to find all-zero ones (faster; frees only trimmed/zeroed blocks).")
@click.option("--convert", "convert_fixed", is_flag=True,
              help="Compact a fixed IMAGE by converting it to a dynamic one in its place.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@progress_option
@parent_options
def command(image: str, no_zero_scan: bool, convert_fixed: bool, as_json: bool, quiet: bool,
            show_progress: bool | None, parent: str | None, parent_search: tuple[str, ...],
            ignore_id_mismatch: bool) -> None:
    """Release unused blocks of IMAGE, move the rest down and shrink the file."""
    try:
        with progress_callback(show_progress, "compacting") as callback:
            result = compact(image, progress=callback, scan_zeros=not no_zero_scan, convert_fixed=convert_fixed,
                             parent_search=parent_search, parent=parent, ignore_id_mismatch=ignore_id_mismatch)
    except ValueError as err:  # the path names a directory or another kind of file
        raise CommandError(str(err)) from None
    if as_json:
        emit_json(operation_document(result))
    elif not quiet:
        click.echo(summary(result))


def summary(result: CompactResult) -> str:
    """One line saying what was done."""
    if result.converted:
        what = "converted to dynamic"
    else:
        parts = [f"{result.blocks_freed} blocks freed", f"{result.blocks_moved} moved"]
        if result.sector_bitmap_blocks_freed or result.sector_bitmap_blocks_moved:
            parts.append(f"{result.sector_bitmap_blocks_freed} sector bitmap blocks freed, "
                         f"{result.sector_bitmap_blocks_moved} moved")
        what = ", ".join(parts)
    return (f"Compacted '{result.image}': {what}; file {format_size(result.file_size_before)} -> "
            f"{format_size(result.file_size_after)}, {format_size(result.bytes_reclaimed)} reclaimed, "
            f"in {result.seconds:.2f} s")
