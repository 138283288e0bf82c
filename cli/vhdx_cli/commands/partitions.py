"""``vhdx partitions``: the MBR or GPT partition table inside the virtual disk."""

from __future__ import annotations

import dataclasses

import click

from vhdx._units import format_size
from vhdx.ops.partitions import list_partitions

from ..options import IMAGE_ARGUMENT, open_image, parent_options
from ..output import emit_json

EPILOG = """\b
Examples:
  vhdx partitions disk.vhdx
  vhdx partitions disk.vhdx --json | jq '.partitions[] | select(.kind != "extended")'
  vhdx extract disk.vhdx --partition 2 part2.img

MBR (primary, extended and logical partitions, numbered from 5 as Linux does) and GPT (names,
type GUIDs, attributes; a protective MBR is recognised, a damaged primary GPT falls back to the
backup). Offsets and lengths are in bytes of the virtual disk. Damage is reported under
"problems" rather than stopping the listing. JSON: {"scheme": ..., "partitions": [...]}.
"""


@click.command(epilog=EPILOG, short_help="List the partitions inside the virtual disk (MBR, GPT).")
@IMAGE_ARGUMENT
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@parent_options
def command(image: str, as_json: bool, parent: str | None, parent_search: tuple[str, ...],
            ignore_id_mismatch: bool) -> None:
    """List the partitions of IMAGE's virtual disk."""
    with open_image(image, parent=parent, parent_search=parent_search, ignore_id_mismatch=ignore_id_mismatch) as disk:
        table = list_partitions(disk)
        sector = disk.logical_sector_size
    if as_json:
        emit_json({"scheme": table.scheme, "sector-size": sector, "disk-guid": table.disk_guid or None,
                   "mbr-signature": None if table.mbr_signature is None else f"0x{table.mbr_signature:08x}",
                   "protective-mbr": table.protective_mbr,
                   "partitions": [{k.replace("_", "-"): v for k, v in dataclasses.asdict(p).items()}
                                  for p in table.partitions],
                   "problems": table.problems})
        return
    label = {"gpt": "GPT", "mbr": "MBR", "none": "no partition table"}[table.scheme]
    extra = f", disk GUID {table.disk_guid}" if table.disk_guid else ""
    click.echo(f"{image}: {label}{extra}")
    if table.partitions:
        click.echo(f"{'#':>3}  {'start':>14}  {'length':>14}  {'size':>9}  {'kind':<8}  type")
        for p in table.partitions:
            what = f"{p.type_name} ({p.type})"
            if p.name:
                what += f" \"{p.name}\""
            if p.bootable:
                what += " bootable"
            click.echo(f"{p.index:>3}  {p.start:>14}  {p.length:>14}  {format_size(p.length):>9}  {p.kind:<8}  {what}")
    for problem in table.problems:
        click.echo(f"warning: {problem}", err=True)
