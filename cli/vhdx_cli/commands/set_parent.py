"""``vhdx set-parent``: point a differencing image at its parent again after a move
(Set-VHD -ParentPath)."""

from __future__ import annotations

import click

from vhdx.ops.set_parent import SetParentResult, set_parent

from ..errors import CommandError
from ..output import emit_json, operation_document

EPILOG = """\b
Examples:
  vhdx set-parent /vms/new/child.avhdx /vms/new/base.vhdx
  vhdx set-parent child.avhdx ../parents/base-renamed.vhdx --json
  vhdx set-parent child.avhdx restored-base.vhdx --ignore-id-mismatch

After CHILD or its parent has been moved or renamed, CHILD's parent locator still names the old
place. set-parent rewrites it: relative_path and absolute_win32_path are set to NEWPARENT, a
volume_path (which would still name the old place) is dropped, and every other key is kept.

NEWPARENT must open as a VHDX (with its own parents), have CHILD's logical sector size and
virtual size, and its DataWriteGuid must be the one CHILD recorded (parent_linkage, or
parent_linkage2): that is how a disk that merely looks alike is told apart from the disk CHILD
was made from. --ignore-id-mismatch accepts a parent whose DataWriteGuid differs and records it
as the new parent_linkage (Hyper-V's -IgnoreIdMismatch); use it only for a parent whose contents
you know to be the ones CHILD was made from, or CHILD will read wrong data.

CHILD's old parent need not exist. The change goes through the log; CHILD's own DataWriteGuid is
kept, so disks made from CHILD stay linked to it. Nothing is written when the locator already
says all this.
"""


@click.command("set-parent", epilog=EPILOG, short_help="Rewrite a differencing image's parent locator.")
@click.argument("child", metavar="CHILD", type=click.Path(path_type=str))
@click.argument("new_parent", metavar="NEWPARENT", type=click.Path(path_type=str))
@click.option("--ignore-id-mismatch", is_flag=True,
              help="Accept a parent whose DataWriteGuid is not the one CHILD recorded, and record it.")
@click.option("--parent-search", "parent_search", multiple=True, metavar="DIR", type=click.Path(path_type=str),
              help="Also look for NEWPARENT's own parents in DIR. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def command(child: str, new_parent: str, ignore_id_mismatch: bool, parent_search: tuple[str, ...], as_json: bool,
            quiet: bool) -> None:
    """Make NEWPARENT the parent recorded in the differencing image CHILD."""
    try:
        result = set_parent(child, new_parent, ignore_id_mismatch=ignore_id_mismatch, parent_search=parent_search)
    except ValueError as err:  # a path that names a directory or another kind of file
        raise CommandError(str(err)) from err
    if as_json:
        document = operation_document(result)
        # Locator keys are the format's own names: shown as stored, not kebab-cased.
        document["locator-before"] = dict(result.locator_before)
        document["locator-after"] = dict(result.locator_after)
        emit_json(document)
    elif not quiet:
        click.echo(_summary(result))


def _summary(result: SetParentResult) -> str:
    if not result.changed:
        return f"'{result.child}' already names '{result.parent}' as its parent; nothing changed"
    text = f"'{result.child}' now names '{result.parent}' as its parent"
    if not result.linkage_matched:
        text += f" (DataWriteGuid mismatch ignored; parent_linkage is now {{{result.parent_data_write_guid}}})"
    relative = result.locator_after.get("relative_path")
    return text + (f"; relative_path {relative}" if relative else "")
