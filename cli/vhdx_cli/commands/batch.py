"""``vhdx batch``: info, hash, check or convert many images in parallel (locally or on Dask)."""

from __future__ import annotations

import click

from vhdx.ops.batch import ACTIONS, BatchResult, Job, run_batch

from ..errors import CommandError
from ..options import SIZE
from ..output import emit_json, operation_document
from ..progress import progress_callback, progress_option

EXIT_SOME_FAILED = 2

EPILOG = """\b
Examples:
  vhdx batch info '/vms/**/*.vhdx' --output info.jsonl
  vhdx batch hash /vms/ s3://bucket/vms/*.vhdx --output hashes.jsonl --workers 8
  vhdx batch check /vms/*.vhdx --output check.jsonl --scheduler tcp://10.0.0.5:8786
  vhdx batch convert /vms/*.avhdx --dest /flat --output convert.jsonl   # flatten chains
  vhdx batch hash huge.vhdx --split-hash 256M --scheduler local --output huge.jsonl

INPUTS are paths, folders (their .vhdx/.avhdx files), globs ('**' crosses folders; quote them)
and fsspec URLs (globs too, e.g. s3://bucket/vms/*.vhdx). Each image gets one JSON line in the
--output file, written as soon as its result is known:

\b
  {"image": ..., "action": "hash", "ok": true, "error": null, "seconds": 1.2,
   "params": {...}, "result": {...}}

A failure (missing file, damaged image, ...) is recorded with "ok": false and a one-line "error"
and never stops the other images. Running the same command again resumes: images already
recorded as done are skipped and failures are retried (the output file is first tidied to one
line per finished image). An output file of a different job (action or parameters) is refused.

'check' records are ok when the check completed; the image's state is in result.exit-status (0
clean, 2 corruptions, 3 leaks only, as 'vhdx check'). 'convert' writes DEST/NAME.vhdx (or .raw
with -O raw) from each input's file name (a short hash is added when two inputs share a name),
replacing files of the same name in DEST.

Work runs in --workers local processes (default: one per CPU; 0 = in this process), or on a
Dask cluster with --scheduler ADDRESS ('local' starts a LocalCluster of --workers processes);
this needs the 'dask' extra (pip install 'vhdx[dask]'), and the images must be reachable from
the workers (shared folders or URLs).

\b
Split hashing (--split-hash SIZE, hash only, SHA-256): each disk larger than SIZE is cut into
ranges of SIZE bytes (a multiple of 1 MiB; the last range may be shorter), hashed as separate
tasks on any worker, and combined in a one-level hash tree:
  ranges[i]   = sha256(virtual bytes [i*SIZE, min((i+1)*SIZE, disk size)))
  sha256-tree = sha256(ranges[0] || ranges[1] || ...)   (the 32-byte binary digests)
The tree root is NOT the plain SHA-256 of the disk and cannot be converted into it; a disk no
larger than SIZE is hashed whole and gets both the plain sha256 and the tree of its one range.

\b
Exit status:
  0   every image succeeded (or was already done)
  2   some images failed (see the output file; run again to retry them)
  1   the job itself could not run (bad options, output of another job, no dask, ...)
"""


@click.command(epilog=EPILOG, short_help="Run info/hash/check/convert over many images in parallel.")
@click.argument("action", type=click.Choice(ACTIONS))
@click.argument("inputs", metavar="INPUTS...", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=str),
              help="JSON Lines file of results (appended to; resumes a job that stopped).")
@click.option("-w", "--workers", type=click.IntRange(min=0), default=None,
              help="Worker processes (default: one per CPU; 0 runs in this process).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run on the Dask cluster at ADDRESS (tcp://host:8786), or 'local' to start one.")
@click.option("-a", "--algorithm", "algorithms", default="sha256", show_default=True, metavar="LIST",
              help="hash: comma-separated hashlib names.")
@click.option("--split-hash", "split", type=SIZE, default=None, metavar="SIZE",
              help="hash: hash disks in ranges of SIZE (e.g. 256M) across workers and combine them in a "
                   "hash tree (see below).")
@click.option("--dest", type=click.Path(file_okay=False, path_type=str), help="convert: folder for the new images.")
@click.option("-O", "--output-format", "dst_format", type=click.Choice(["vhdx", "raw"]), default="vhdx",
              show_default=True, help="convert: format of the new images.")
@click.option("--type", "disk_type", type=click.Choice(["dynamic", "fixed"]), default=None,
              help="convert: VHDX type of the new images (default dynamic).")
@click.option("--parent-search", "parent_search", multiple=True, metavar="DIR", type=click.Path(path_type=str),
              help="Also look for parents of differencing images in DIR. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print no summary.")
@progress_option
def command(action: str, inputs: tuple[str, ...], output: str, workers: int | None, scheduler: str | None,
            algorithms: str, split: int | None, dest: str | None, dst_format: str, disk_type: str | None,
            parent_search: tuple[str, ...], as_json: bool, quiet: bool, show_progress: bool | None) -> None:
    """Run ACTION (info, hash, check or convert) on every image of INPUTS, in parallel."""
    if action != "convert" and (dest or disk_type or dst_format != "vhdx"):
        raise CommandError("--dest, --type and -O apply to 'convert' only")
    if action == "convert" and not dest:
        raise CommandError("convert needs --dest DIR (the folder for the new images)")
    if action != "hash" and (split is not None or algorithms != "sha256"):
        raise CommandError("--algorithm and --split-hash apply to 'hash' only")
    if disk_type and dst_format == "raw":
        raise CommandError("--type applies to VHDX output only (not -O raw)")
    try:
        job = Job(action, algorithms=tuple(algorithms.split(",")), split=split, dest=dest, dst_format=dst_format,
                  disk_type=disk_type, parent_search=parent_search)
    except ValueError as err:
        raise CommandError(str(err)) from None
    try:
        with progress_callback(show_progress, f"batch {action}") as callback:
            result = run_batch(job, inputs, output, workers=workers, scheduler=scheduler, progress=callback)
    except ValueError as err:  # the output file holds another job's results
        raise CommandError(str(err)) from None
    except OSError as err:
        if err.filename is None and not err.strerror:  # e.g. a Dask scheduler that cannot be reached
            raise CommandError(f"cannot reach the Dask scheduler {scheduler}: {err}") from None
        raise
    if as_json:
        emit_json(operation_document(result))
    elif not quiet:
        click.echo(_summary(result))
    if result.failed:
        click.echo(f"vhdx: {result.failed} of {result.images} images failed (recorded in {result.output}; run the "
                   "same command again to retry them)", err=True)
        raise click.exceptions.Exit(EXIT_SOME_FAILED)


def _summary(result: BatchResult) -> str:
    parts = [f"{result.succeeded} ok", f"{result.failed} failed"]
    if result.skipped:
        parts.append(f"{result.skipped} already done")
    tasks = f" in {result.tasks} tasks" if result.tasks != result.succeeded + result.failed else ""
    return (f"batch {result.action}: {result.images} images: {', '.join(parts)}{tasks}, "
            f"{result.seconds:.1f} s; results in {result.output}")


__all__ = ["command"]
