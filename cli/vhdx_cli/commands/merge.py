"""``vhdx merge``: merge a differencing child into its parent or a farther ancestor, in place
(Merge-VHD)."""

from __future__ import annotations

import click

from vhdx._units import format_size
from vhdx.ops.merge import MergeResult, merge

from ..errors import CommandError
from ..output import emit_json, operation_document
from ..progress import progress_callback, progress_option

EPILOG = """\b
Examples:
  vhdx merge child.avhdx                          # into its parent; child.avhdx is removed
  vhdx merge top.avhdx --into base.vhdx           # through every image in between
  vhdx merge child.avhdx --keep                   # keep the merged file(s)
  vhdx merge child.avhdx --search /vms/other      # also look there for other children
  vhdx merge --json child.avhdx | jq '."bytes-written"'

Everything the child (and any image between it and ANCESTOR) holds is copied into ANCESTOR, read
through the child's chain so the upper layers win: data, partially present blocks sector by
sector, and zeroed blocks. ANCESTOR then reads exactly as CHILD did, and the merged images are
deleted (--keep keeps them: an image between CHILD and ANCESTOR no longer holds its own state
afterwards, and none of them is needed any more). To flatten a chain into a new file instead,
use 'vhdx convert CHILD NEW.vhdx'.

ANCESTOR's DataWriteGuid changes, so any other differencing image made from it no longer opens;
the same goes for other children of the images removed. Such images are looked for next to each
of them (and in --search folders); if any is found the merge is refused, naming them, unless
--force is given.

The merge is crash-safe: the image above ANCESTOR first accepts ANCESTOR's new DataWriteGuid
(parent_linkage2), then the data is copied through ANCESTOR's log, then the merged files are
removed (the lowest first). Interrupted before the removal, CHILD still reads exactly as before:
run the same command again to finish. Interrupted during the removal, ANCESTOR is complete and
the merged files left over (CHILD then has a missing parent) can be deleted.
"""


@click.command(epilog=EPILOG, short_help="Merge a differencing image into its parent (in place).")
@click.argument("child", metavar="CHILD", type=click.Path(path_type=str))
@click.option("--into", "into", metavar="ANCESTOR", type=click.Path(path_type=str), default=None,
              help="Merge into this ancestor of CHILD (default: CHILD's parent).")
@click.option("--force", is_flag=True, help="Merge even though other images depend on the ones changed or removed.")
@click.option("--keep", is_flag=True, help="Do not delete the merged image(s).")
@click.option("--search", "search", multiple=True, metavar="DIR", type=click.Path(path_type=str),
              help="Also look for other children in DIR. Repeatable.")
@click.option("--parent-search", "parent_search", multiple=True, metavar="DIR", type=click.Path(path_type=str),
              help="Also look for parents (by the file name the child records) in DIR. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@progress_option
def command(child: str, into: str | None, force: bool, keep: bool, search: tuple[str, ...],
            parent_search: tuple[str, ...], as_json: bool, quiet: bool, show_progress: bool | None) -> None:
    """Merge CHILD into its parent (or ANCESTOR) and remove it."""
    try:
        with progress_callback(show_progress, "merging") as callback:
            result = merge(child, into=into, force=force, keep=keep, search=search, parent_search=parent_search,
                           progress=callback)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if result.orphaned:
        click.echo(f"vhdx: warning: no longer linked to their parent (--force): {', '.join(result.orphaned)}",
                   err=True)
    if as_json:
        emit_json(operation_document(result))
    elif not quiet:
        for line in summary(result):
            click.echo(line)


def summary(result: MergeResult) -> list[str]:
    """What was done, in a few lines."""
    layers = len(result.merged)
    what = f"'{result.child}'" + (f" and {layers - 1} image(s) below it" if layers > 1 else "")
    lines = [f"Merged {what} into '{result.target}': {format_size(result.bytes_written)} copied, "
             f"{format_size(result.bytes_zeroed)} zeroed, {result.blocks_allocated} blocks allocated; file "
             f"{format_size(result.file_size_before)} -> {format_size(result.file_size_after)}, "
             f"in {result.seconds:.2f} s" + (" (an interrupted merge was completed)" if result.resumed else "")]
    if result.removed:
        lines.append(f"Removed: {', '.join(result.removed)}")
    if result.kept:
        lines.append(f"Kept: {', '.join(result.merged)}: not valid as separate disks any more ('{result.target}' "
                     "holds their data); delete them when done")
    if result.reparented:
        lines.append(f"Re-pointed to '{result.target}': {', '.join(result.reparented)}")
    return lines
