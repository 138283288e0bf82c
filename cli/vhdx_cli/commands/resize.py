"""``vhdx resize``: grow or shrink the virtual disk of an image in place (Resize-VHD, qemu-img resize)."""

from __future__ import annotations

import click

from vhdx._units import format_size, parse_size
from vhdx.disk import open as open_disk
from vhdx.ops.resize import ResizeResult, resize, resolve_size

from ..errors import CommandError
from ..options import IMAGE_ARGUMENT
from ..output import emit_json, operation_document
from ..progress import progress_callback, progress_option

EPILOG = """\b
Examples:
  vhdx resize disk.vhdx 100G          # set the virtual size to 100 GiB
  vhdx resize disk.vhdx +10G          # grow by 10 GiB
  vhdx resize disk.vhdx -- -1G        # shrink by 1 GiB (or: vhdx resize disk.vhdx -1G)
  vhdx resize --force disk.vhdx 20G   # shrink even if data lies past 20 GiB (it is lost)
  vhdx resize --json disk.vhdx 2T

SIZE is a byte count with an optional K, M, G, T suffix (binary units), or, as for qemu-img
resize, +SIZE / -SIZE relative to the current size. It must be a multiple of the logical sector
size (512 or 4096 bytes; not rounded), above 0 and at most 64T.

Growing adds space that reads as zeros: unallocated blocks in a dynamic image, new blocks
preallocated at the end of the file in a fixed one. When the block allocation table no longer fits
its region it moves to the end of the file. Shrinking is refused while a stored block holds
data past the new end (the error names the first such offset) unless --force is given; blocks
past the end are dropped and the file is truncated when they were at its end. Shrink the
partitions and file systems inside the disk first.

The change is made through the image's log in one entry, so a crash leaves either the old or the
new disk. Differencing images cannot be resized (a child's size must equal its parent's). Resizing
an image that is the parent of differencing images changes its DataWriteGuid: the children no
longer match it and will not open (except with --ignore-id-mismatch); resize a base only when it
has no children.
"""


@click.command(epilog=EPILOG, short_help="Grow or shrink the virtual size of an image.",
               context_settings={"ignore_unknown_options": True})
@IMAGE_ARGUMENT
@click.argument("size_text", metavar="SIZE")
@click.option("--force", is_flag=True, help="Shrink even when data lies past the new end (it is dropped).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@progress_option
def command(image: str, size_text: str, force: bool, as_json: bool, quiet: bool, show_progress: bool | None) -> None:
    """Set the virtual size of IMAGE to SIZE (absolute, or +SIZE / -SIZE relative)."""
    if size_text.startswith("--"):
        raise CommandError(f"no such option: {size_text}")
    try:
        if size_text[:1] in ("+", "-"):
            with open_disk(image, require_parent=False) as disk:
                current = disk.size
        else:
            current = 0
        size = resolve_size(size_text, current, parse_size)
    except ValueError as err:
        raise CommandError(f"invalid SIZE: {err}") from None
    try:
        with progress_callback(show_progress, "resizing") as callback:
            result = resize(image, size, force=force, progress=callback)
    except ValueError as err:
        raise CommandError(f"{image}: {err}") from None
    if as_json:
        emit_json(operation_document(result))
    elif not quiet:
        click.echo(_summary(result))


def _summary(result: ResizeResult) -> str:
    if result.new_size == result.old_size:
        return f"'{result.image}' is already {format_size(result.new_size)} ({result.new_size} bytes); nothing changed"
    verb = "Grew" if result.new_size > result.old_size else "Shrank"
    details = []
    if result.bat_relocated:
        details.append(f"BAT moved to 0x{result.bat_offset_after:x}")
    if result.blocks_allocated:
        details.append(f"{result.blocks_allocated} blocks allocated")
    if result.blocks_freed:
        details.append(f"{result.blocks_freed} blocks freed")
    details.append(f"file {format_size(result.file_size_after)}")
    return (f"{verb} '{result.image}' ({result.disk_type}) from {format_size(result.old_size)} to "
            f"{format_size(result.new_size)} ({result.new_size} bytes): {', '.join(details)}")
