"""``vhdx info``: what an image is (qemu-img info, plus what Hyper-V's Get-VHD shows and more)."""

from __future__ import annotations

import click

from .. import output
from ..options import IMAGE_ARGUMENT, open_image, parent_options

EPILOG = """\b
Examples:
  vhdx info disk.vhdx
  vhdx info --json disk.vhdx | jq '."virtual-size"'
  vhdx info child.avhdx --parent-search /vms/base
  vhdx info child.avhdx --parent /vms/base/parent.vhdx --ignore-id-mismatch

A differencing image whose parent cannot be found is still described; the parent is reported
as missing. --json prints qemu-img's key names (virtual-size, cluster-size, actual-size,
dirty-flag, backing-filename, ...) with the VHDX detail under format-specific.data and the
chain of parents under chain.
"""


@click.command(epilog=EPILOG, short_help="Describe an image (qemu-img info and Get-VHD details).")
@IMAGE_ARGUMENT
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@click.option("--forensic", is_flag=True,
              help="Print a case-file JSON report: every identifier, both headers, the locator as recorded, "
                   "file timestamps and the findings of a read-only check.")
@parent_options
def command(image: str, as_json: bool, forensic: bool, parent: str | None, parent_search: tuple[str, ...],
            ignore_id_mismatch: bool) -> None:
    """Describe IMAGE: geometry, identifiers, headers, log, allocation and parent chain."""
    if forensic:
        from vhdx.ops.forensics import forensic_report

        output.emit_json(forensic_report(image, parent_search=parent_search, parent=parent))
        return
    with open_image(image, parent=parent, parent_search=parent_search, ignore_id_mismatch=ignore_id_mismatch,
                    require_parent=False) as disk:
        info = disk.info()
        if as_json:
            output.emit_json(output.info_document(disk, info))
        else:
            output.emit_lines(output.info_lines(disk, info))
