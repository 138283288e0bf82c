"""``vhdx log``: every entry still in the log region, active or stale."""

from __future__ import annotations

import click

from vhdx.ops.forensics import log_history

from ..output import emit_json, operation_document

EPILOG = """\b
Examples:
  vhdx log disk.vhdx
  vhdx log evidence.vhdx --json | jq '.entries[] | select(.active)'

Each entry: its place in the log, sequence number, LogGuid (the current session's or an earlier
one's: the log keeps old entries until they are overwritten), whether a replay would apply it
now, and the file ranges it writes. For writes into the BAT, the blocks that sector records as
allocated (and where), and whether the BAT still says so: a history of allocations. The image is opened read-only and never written. JSON: {"entries": [...]}.
"""


@click.command(epilog=EPILOG, short_help="List the log entries (a history of metadata writes).")
@click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
def command(image: str, as_json: bool) -> None:
    """List every valid entry in IMAGE's log region."""
    history = log_history(image)
    if as_json:
        emit_json(operation_document(history))
        return
    click.echo(f"{image}: log at 0x{history.log_offset:x} ({history.log_length} bytes), current LogGuid "
               f"{history.current_log_guid}, {len(history.entries)} entries")
    for e in history.entries:
        mark = "active" if e.active else ("current" if e.current_guid else "stale")
        click.echo(f"  seq {e.sequence_number:>6}  at 0x{e.log_offset:06x}  {mark:<7}  guid {e.log_guid}  "
                   f"{len(e.writes)} writes")
        for w in e.writes:
            click.echo(f"      {w.kind:<4} 0x{w.file_offset:x}+{w.length}  {w.target}")
            for b in w.bat_entries:
                what = f"block {b['block']}" if "block" in b else f"bitmap chunk {b['bitmap_chunk']}"
                now = (f", now {b['current_state']}@0x{b['current_file_offset']:x}" if b["changed"]
                       else " (still so)")
                click.echo(f"           {what}: {b['logged_state']}@0x{b['logged_file_offset']:x}{now}")
    for note in history.notes:
        click.echo(f"warning: {note}", err=True)
