"""``vhdx hash``: digests of the virtual disk's content (as of the equivalent raw disk)."""

from __future__ import annotations

import click

from vhdx.ops.hashing import check_algorithms, hash_disk

from ..errors import CommandError
from ..options import IMAGE_ARGUMENT, open_image, parent_options
from ..output import emit_json, operation_document
from ..progress import progress_callback, progress_option

EPILOG = """\b
Examples:
  vhdx hash evidence.vhdx                          # sha256
  vhdx hash evidence.vhdx -a sha256,sha1,md5       # several algorithms, one pass
  vhdx hash evidence.vhdx --partitions --json      # also each partition
  vhdx hash child.avhdx --parent-search /cases/42  # the disk as the whole chain presents it

The digests are those of the raw virtual disk: the same as hashing the output of 'vhdx cat' or
'qemu-img convert -O raw'. The image is opened read-only (a pending log is replayed in memory)
and never written. Output: one 'ALGORITHM  HEXDIGEST' line per algorithm, then per partition
'ALGORITHM  HEXDIGEST  partN'.
"""


@click.command(epilog=EPILOG, short_help="Hash the virtual disk (several algorithms, one pass).")
@IMAGE_ARGUMENT
@click.option("-a", "--algorithm", "algorithms", default="sha256", show_default=True, metavar="LIST",
              help="Comma-separated hashlib names: sha256, sha1, md5, sha512, blake2b, sha3_256, ...")
@click.option("--partitions", is_flag=True, help="Also hash each MBR/GPT partition.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@progress_option
@parent_options
def command(image: str, algorithms: str, partitions: bool, as_json: bool, show_progress: bool | None,
            parent: str | None, parent_search: tuple[str, ...], ignore_id_mismatch: bool) -> None:
    """Print hashes of IMAGE's virtual disk content."""
    try:
        names = check_algorithms(algorithms.split(","))
    except ValueError as err:
        raise CommandError(str(err)) from None
    with open_image(image, parent=parent, parent_search=parent_search, ignore_id_mismatch=ignore_id_mismatch) as disk:
        with progress_callback(show_progress, "hashing") as callback:
            result = hash_disk(disk, names, partitions=partitions, progress=callback)
    if as_json:
        emit_json(operation_document(result))
        return
    for name in result.algorithms:
        click.echo(f"{name.upper()}  {result.digests[name]}")
    for part in result.partitions:
        for name in result.algorithms:
            click.echo(f"{name.upper()}  {part.digests[name]}  part{part.index}")
