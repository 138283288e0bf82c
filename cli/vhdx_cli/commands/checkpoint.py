"""``vhdx checkpoint``: offline, disk-level checkpoints in the Hyper-V style (create, list,
revert, delete) over a chain of differencing images in one folder."""

from __future__ import annotations

import datetime

import click

from vhdx._units import format_size
from vhdx.ops.checkpoint import (
    CheckpointChain,
    CheckpointResult,
    create_checkpoint,
    delete_checkpoint,
    list_checkpoints,
    revert_checkpoint,
)

from ..errors import CommandError
from ..options import SIZE, IMAGE_ARGUMENT
from ..output import emit_json, operation_document
from ..progress import progress_callback, progress_option
from .merge import summary as merge_summary

EPILOG = """\b
Examples:
  vhdx checkpoint create disk.vhdx                # disk_<GUID>.avhdx becomes the active disk
  vhdx checkpoint create disk.vhdx --name before-upgrade
  vhdx checkpoint list disk.vhdx
  vhdx checkpoint revert disk.vhdx                # discard what was written since the newest checkpoint
  vhdx checkpoint delete disk.vhdx                # fold the newest checkpoint into its parent
  vhdx checkpoint delete disk.vhdx disk_5D2B3C2E-0E1A-4F0B-9C1D-2A3B4C5D6E7F.avhdx

A checkpoint chain is a base disk and the differencing disks made from it, one on top of the
other, in one folder. IMAGE may be any disk of the chain. The *active* disk is the newest one
(the one a VM should use: every write goes there). Children are found by looking in the folder
for differencing images whose parent locator leads to a disk and whose parent_linkage matches its
DataWriteGuid; a disk with two children is not a linear chain and is refused.
"""

PARENT_SEARCH = click.option("--parent-search", "parent_search", multiple=True, metavar="DIR",
                             type=click.Path(path_type=str),
                             help="Also look for parents (by the file name recorded) in DIR. Repeatable.")
JSON = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
QUIET = click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")


@click.group(name="checkpoint", epilog=EPILOG, short_help="Create, list, revert and delete disk checkpoints.")
def command() -> None:
    """Offline checkpoints of a disk: a chain of differencing images (.avhdx), as Hyper-V makes."""


CREATE_EPILOG = """\b
Examples:
  vhdx checkpoint create disk.vhdx
  vhdx checkpoint create disk_5D2B...avhdx --name nightly --json

A new differencing disk '<NAME>_<GUID>.avhdx' (NAME: --name, by default the base disk's file name
without its extension; GUID: a new one in upper case, as Hyper-V names checkpoint disks) is
created next to the active disk, with the active disk as its parent. It becomes the active disk;
the one that was active is left unchanged from now on and holds the checkpoint's state. Its path
is printed. Nothing else is modified.
"""


@command.command(name="create", epilog=CREATE_EPILOG, short_help="Make a checkpoint (a new active .avhdx).")
@IMAGE_ARGUMENT
@click.option("--name", default=None, help="File name prefix (default: the base disk's name without extension).")
@click.option("--block-size", type=SIZE, default=None, help="Block size of the new disk (default: 2M).")
@PARENT_SEARCH
@JSON
@QUIET
def create_command(image: str, name: str | None, block_size: int | None, parent_search: tuple[str, ...],
                   as_json: bool, quiet: bool) -> None:
    """Create a checkpoint of IMAGE's chain: a differencing child of the active disk."""
    try:
        result = create_checkpoint(image, name=name, block_size=block_size, parent_search=parent_search)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if as_json:
        emit_json(operation_document(result))
    elif not quiet:
        click.echo(result.checkpoint)


LIST_EPILOG = """\b
Examples:
  vhdx checkpoint list disk.vhdx
  vhdx checkpoint list --json disk.vhdx | jq -r '.active'

Lists the chain from the base disk (0) to the active disk, in creation order (the order of the
chain, which is also the order the disks were made in; each file's modification time is shown
too), with each file's size. Nothing is modified. Disks left over by an interrupted 'checkpoint
delete' (merged already, not yet removed) are listed separately; they can be deleted.
"""


@command.command(name="list", epilog=LIST_EPILOG, short_help="List the chain, base to active.")
@IMAGE_ARGUMENT
@PARENT_SEARCH
@JSON
def list_command(image: str, parent_search: tuple[str, ...], as_json: bool) -> None:
    """List the checkpoint chain of IMAGE, base disk first, active disk last."""
    try:
        result = list_checkpoints(image, parent_search=parent_search)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if as_json:
        emit_json(operation_document(result))
        return
    for line in list_lines(result):
        click.echo(line)


def list_lines(result: CheckpointChain) -> list[str]:
    """Human rendering of a checkpoint chain."""
    lines = [f"{'#':<3} {'kind':<11} {'file size':>10}  {'modified':<19}  file"]
    for disk in result.disks:
        when = datetime.datetime.fromtimestamp(disk.modified).strftime("%Y-%m-%d %H:%M:%S")
        mark = "  (active)" if disk.active else ""
        lines.append(f"{disk.index:<3} {disk.kind:<11} {format_size(disk.file_size):>10}  {when:<19}  {disk.path}{mark}")
    for path in result.leftovers:
        lines.append(f"left over from an interrupted delete (already merged, safe to remove): {path}")
    return lines


REVERT_EPILOG = """\b
Examples:
  vhdx checkpoint revert disk.vhdx

The active disk (the newest .avhdx) is deleted, so its parent, the newest checkpoint, becomes the
active disk again: everything written since that checkpoint was made is discarded. To go on
writing while keeping the checkpoint, run 'vhdx checkpoint create' afterwards. Refused when the
base disk is the active disk (there is no checkpoint).
"""


@command.command(name="revert", epilog=REVERT_EPILOG, short_help="Discard the active disk (back to the newest checkpoint).")
@IMAGE_ARGUMENT
@PARENT_SEARCH
@JSON
@QUIET
def revert_command(image: str, parent_search: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Delete the active disk of IMAGE's chain; its parent becomes active."""
    try:
        result = revert_checkpoint(image, parent_search=parent_search)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if as_json:
        emit_json(operation_document(result))
    elif not quiet:
        click.echo(f"Discarded '{result.checkpoint}' ({format_size(result.file_size_before or 0)}); "
                   f"active disk: {result.active}")


DELETE_EPILOG = """\b
Examples:
  vhdx checkpoint delete disk.vhdx                 # the newest checkpoint disk (the active one)
  vhdx checkpoint delete disk.vhdx disk_5D2B...avhdx

The checkpoint disk CHECKPOINT (a path, or a file name in IMAGE's folder; by default the newest,
i.e. the active disk) is merged into its parent and removed: the data stays, only the restore
point goes, and the active disk reads exactly as before. Deleting the newest makes its parent the
active disk. Deleting one in the middle re-points the disk above it to the parent: that disk
first accepts the parent's new DataWriteGuid (parent_linkage2), the merge copies the data, then
its locator is rewritten to name the parent, and only then is the merged file removed. Each step
is crash-safe; interrupted, the chain still reads as before (run the command again). The base
disk cannot be deleted. See 'vhdx merge --help' for --force.
"""


@command.command(name="delete", epilog=DELETE_EPILOG, short_help="Merge a checkpoint into its parent.")
@IMAGE_ARGUMENT
@click.argument("checkpoint", metavar="[CHECKPOINT]", required=False, type=click.Path(path_type=str))
@click.option("--force", is_flag=True, help="Merge even though other images depend on the parent.")
@PARENT_SEARCH
@JSON
@QUIET
@progress_option
def delete_command(image: str, checkpoint: str | None, force: bool, parent_search: tuple[str, ...], as_json: bool,
                   quiet: bool, show_progress: bool | None) -> None:
    """Delete a checkpoint of IMAGE's chain by merging its disk into its parent."""
    try:
        with progress_callback(show_progress, "merging") as callback:
            result = delete_checkpoint(image, checkpoint, force=force, parent_search=parent_search,
                                       progress=callback)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if as_json:
        emit_json(operation_document(result))
    elif not quiet:
        for line in delete_lines(result):
            click.echo(line)


def delete_lines(result: CheckpointResult) -> list[str]:
    lines = [f"Deleted checkpoint '{result.checkpoint}'; active disk: {result.active}"]
    if result.merge is not None:
        lines += merge_summary(result.merge)
    return lines
