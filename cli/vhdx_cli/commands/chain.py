"""``vhdx chain``: the layers of a differencing disk, top to bottom, and whether each link holds."""

from __future__ import annotations

import click

from .. import output
from ..options import IMAGE_ARGUMENT, open_image, parent_options

EXIT_BROKEN_CHAIN = 2

EPILOG = f"""\b
Examples:
  vhdx chain child.avhdx
  vhdx chain --json child.avhdx --parent-search /vms/base
  vhdx chain child.avhdx || echo "chain is broken"

\b
Exit status:
  0   every parent was found and each one's DataWriteGuid matches the parent_linkage its
      child recorded (or the mismatch was accepted with --ignore-id-mismatch)
  {EXIT_BROKEN_CHAIN}   the chain is broken: a parent is missing (the chain is printed up to the
      missing link, which is marked MISSING) or a link does not match (marked MISMATCH)
  1   IMAGE (or a parent) cannot be read at all
"""


@click.command(epilog=EPILOG, short_help="List the layers of a differencing chain.")
@IMAGE_ARGUMENT
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of layers, top first.")
@parent_options
def command(image: str, as_json: bool, parent: str | None, parent_search: tuple[str, ...],
            ignore_id_mismatch: bool) -> None:
    """List the chain of IMAGE: each layer with its type, size, identifiers and link check."""
    # The chain is opened accepting mismatched links and missing parents so that it can be shown
    # up to the break; whether the break is acceptable is decided below.
    with open_image(image, parent=parent, parent_search=parent_search, ignore_id_mismatch=True,
                    require_parent=False) as disk:
        layers = output.chain_document(disk, disk.info())
    if as_json:
        output.emit_json(layers)
    else:
        output.emit_lines(output.chain_lines(layers, ignore_id_mismatch=ignore_id_mismatch))
    broken = any(layer["missing"] for layer in layers) or (
        not ignore_id_mismatch and not output.chain_is_sound(layers))
    if broken:
        raise click.exceptions.Exit(EXIT_BROKEN_CHAIN)
