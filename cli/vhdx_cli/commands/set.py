"""``vhdx set``: change an image's Virtual Disk ID or physical sector size in place
(Set-VHD -ResetDiskIdentifier / -PhysicalSectorSizeBytes)."""

from __future__ import annotations

import uuid

import click

from vhdx.ops.set_properties import SetResult, set_properties

from ..errors import CommandError
from ..options import parent_options
from ..output import emit_json, operation_document

EPILOG = """\b
Examples:
  vhdx set disk.vhdx --reset-disk-id
  vhdx set disk.vhdx --disk-id 6f1c2e4a-0d3b-4c55-9a1e-2b7d8c9f0a11
  vhdx set disk.vhdx --physical-sector-size 512
  vhdx set --json disk.vhdx --reset-disk-id --physical-sector-size 4096

The Virtual Disk ID is how a guest (and Windows) tells disks apart; give a copy of an image a new
one before attaching both to one machine. Resetting the disk id of a parent does not break its
differencing children: a child records its parent's DataWriteGuid (parent_linkage, MS-VHDX
2.6.2.6), not its disk id; the children keep the id they copied when they were made.

The physical sector size (512 or 4096) is only reported to the guest; the logical sector size,
which decides how the file is laid out, cannot be changed in place (use vhdx convert).

Neither change alters what the disk reads, so the image's DataWriteGuid is kept. The change goes
through the log. A differencing IMAGE is opened with its parents (--parent, --parent-search).
"""


@click.command(epilog=EPILOG, short_help="Change an image's disk id or physical sector size.")
@click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))
@click.option("--reset-disk-id", is_flag=True, help="Give IMAGE a new random Virtual Disk ID.")
@click.option("--disk-id", metavar="GUID", default=None, help="Give IMAGE this Virtual Disk ID.")
@click.option("--physical-sector-size", type=click.Choice(["512", "4096"]), default=None,
              help="Physical sector size reported to the guest.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@parent_options
def command(image: str, reset_disk_id: bool, disk_id: str | None, physical_sector_size: str | None, as_json: bool,
            quiet: bool, parent: str | None, parent_search: tuple[str, ...], ignore_id_mismatch: bool) -> None:
    """Change properties of IMAGE in place."""
    if not reset_disk_id and disk_id is None and physical_sector_size is None:
        raise click.UsageError("nothing to change: give --reset-disk-id, --disk-id or --physical-sector-size")
    if reset_disk_id and disk_id is not None:
        raise click.UsageError("--reset-disk-id and --disk-id cannot be used together")
    wanted: uuid.UUID | None = None
    if disk_id is not None:
        try:
            wanted = uuid.UUID(disk_id.strip().strip("{}"))
        except ValueError:
            raise click.BadParameter(f"{disk_id!r} is not a GUID", param_hint="--disk-id") from None
    try:
        result = set_properties(image, reset_disk_id=reset_disk_id, disk_id=wanted,
                                physical_sector_size=int(physical_sector_size) if physical_sector_size else None,
                                parent=parent, parent_search=parent_search, ignore_id_mismatch=ignore_id_mismatch)
    except ValueError as err:
        raise CommandError(str(err)) from err
    if as_json:
        emit_json(operation_document(result))
    elif not quiet:
        click.echo(_summary(result))


def _summary(result: SetResult) -> str:
    changes = []
    if result.disk_id_before != result.disk_id_after:
        changes.append(f"disk id {result.disk_id_before} -> {result.disk_id_after}")
    if result.physical_sector_size_before != result.physical_sector_size_after:
        changes.append(f"physical sector size {result.physical_sector_size_before} -> "
                       f"{result.physical_sector_size_after}")
    if not changes:
        return f"'{result.image}' already has these properties; nothing changed"
    return f"'{result.image}': " + ", ".join(changes)
