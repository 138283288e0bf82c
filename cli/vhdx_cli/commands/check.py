"""``vhdx check``: check an image's structures (qemu-img check, Test-VHD) and optionally repair it."""

from __future__ import annotations

import click

from vhdx.ops.check import CheckReport, Finding, check

from ..errors import CommandError
from ..options import IMAGE_ARGUMENT, parent_options
from ..output import emit_json, emit_lines
from ..progress import progress_callback, progress_option

EPILOG = """\b
Examples:
  vhdx check disk.vhdx
  vhdx check --json disk.vhdx | jq .corruptions
  vhdx check --repair disk.vhdx
  vhdx check child.avhdx --parent-search /vms/base

Every structure is examined on its own, so damaged files that cannot be opened are still
reported on: file identifier, both headers, the log, both region tables, the metadata, every
BAT entry, the sector bitmaps, unreferenced space and the chain of parents. Without --repair
the file is only read. --repair replays a pending log, restores a damaged header or region
table from its good copy, rewrites a damaged file identifier signature (keeping a readable
creator string), settles two valid headers that carry the same sequence number but differ (the
one whose log must be replayed wins, else header 1; the DataWriteGuid kept is listed), detaches
BAT entries that cannot be used (the virtual ranges affected are listed), moves overlapping
blocks apart and truncates unreferenced data at the end of the file, all through the log;
interior leaks are left to compaction.

\b
Exit status (as qemu-img check):
  0   no corruption and no leak (after the repair, with --repair)
  2   corruptions remain
  3   only leaks remain (unreferenced space holding data; counted in 1 MiB units)
  1   the check could not complete (not a VHDX file, unsupported features, I/O errors)

--json prints qemu-img check's field names (filename, format, check-errors, corruptions,
leaks, corruptions-fixed, leaks-fixed, image-end-offset, total-clusters, allocated-clusters,
fragmented-clusters) plus findings, errors, repairs and, for a differencing image, the parent's
report under backing-image.
"""


@click.command(epilog=EPILOG, short_help="Check an image for damage (and repair it).")
@IMAGE_ARGUMENT
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@click.option("--repair", "-r", is_flag=True, help="Open IMAGE read-write and repair what can be repaired safely.")
@click.option("--verbose", "-v", is_flag=True, help="Also list remarks of severity 'info' (--json always has them).")
@progress_option
@parent_options
def command(image: str, as_json: bool, repair: bool, verbose: bool, show_progress: bool | None, parent: str | None,
            parent_search: tuple[str, ...], ignore_id_mismatch: bool) -> None:
    """Check IMAGE and report every problem found (exit status as qemu-img check)."""
    try:
        with progress_callback(show_progress, "repairing" if repair else "checking") as callback:
            result = check(image, repair=repair, parent_search=parent_search, progress=callback, parent=parent,
                           ignore_id_mismatch=ignore_id_mismatch)
    except ValueError as err:  # the path names a directory or another kind of file
        raise CommandError(str(err)) from err
    if as_json:
        emit_json(result.to_dict())
    else:
        emit_lines(report_lines(result, verbose=verbose))
    if result.exit_status:
        raise click.exceptions.Exit(result.exit_status)


def _finding_line(f: Finding) -> str:
    where = f" at 0x{f.file_offset:x}" if f.file_offset is not None else ""
    fixed = " [fixed]" if f.fixed else ""
    return f"{f.severity}: {f.structure}{where}: {f.message}{fixed}"


def report_lines(result: CheckReport, indent: str = "", *, verbose: bool = False) -> list[str]:
    """The text report: findings (info ones only when ``verbose``), repairs, then qemu-img
    check's summary sentences."""
    lines = [indent + _finding_line(f) for f in result.findings if verbose or f.severity != "info"]
    lines += [f"{indent}error: {e}" for e in result.check_errors]
    for action in result.repairs:
        lines.append(f"{indent}repaired: {action.message}")
        lines += [f"{indent}    virtual range 0x{o:x}+0x{n:x} changed" for o, n in action.virtual_ranges]
    if lines:
        lines.append("")
    if result.corruptions_fixed or result.leaks_fixed:
        lines += [f"{indent}The following inconsistencies were found and repaired:", "",
                  f"{indent}    {result.leaks_fixed} leaked clusters", f"{indent}    {result.corruptions_fixed} corruptions",
                  ""]
    if result.check_errors:
        lines.append(f"{indent}{len(result.check_errors)} internal errors occurred during the check.")
    if result.corruptions:
        lines += [f"{indent}{result.corruptions} errors were found on the image.",
                  f"{indent}Data may be corrupted, or further writes to the image may corrupt it."]
    if result.leaks:
        lines += [f"{indent}{result.leaks} leaked clusters were found on the image.",
                  f"{indent}This means waste of disk space, but no harm to data."]
    if not (result.check_errors or result.corruptions or result.leaks):
        lines.append(f"{indent}No errors were found on the image.")
    if result.total_clusters:
        allocated = result.allocated_clusters or 0
        fragmented = result.fragmented_clusters or 0
        lines.append(f"{indent}{allocated}/{result.total_clusters} = {100 * allocated / result.total_clusters:.2f}% "
                     f"allocated, {100 * fragmented / allocated if allocated else 0:.2f}% fragmented")
    if result.image_end_offset is not None:
        lines.append(f"{indent}Image end offset: {result.image_end_offset}")
    if result.parent is not None:
        lines += ["", f"{indent}Parent {result.parent.filename}:"]
        lines += report_lines(result.parent, indent + "    ", verbose=verbose)
    return lines
