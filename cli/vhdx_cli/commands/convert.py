"""``vhdx convert``: copy an image into a new one of another format, type or geometry
(Convert-VHD, qemu-img convert)."""

from __future__ import annotations

import os
import stat
import sys

import click

from vhdx._units import format_size
from vhdx.constants import FILE_IDENTIFIER_SIGNATURE
from vhdx.engine.source import is_url
from vhdx.ops.convert import ConvertResult, convert, infer_format

from ..errors import CommandError
from ..options import SIZE, parent_options
from ..output import emit_json, operation_document
from ..progress import progress_callback, progress_option

EPILOG = """\b
Examples:
  vhdx convert disk.raw disk.vhdx                   # raw -> dynamic VHDX (zeros not allocated)
  vhdx convert disk.vhdx disk.raw                   # VHDX -> sparse raw file
  vhdx convert disk.vhdx fixed.vhdx --type fixed
  vhdx convert disk.vhdx small.vhdx --block-size 1M --logical-sector-size 4096
  vhdx convert child.avhdx flat.vhdx                # flatten a differencing chain
  vhdx convert disk.vhdx - | gzip > disk.raw.gz     # raw bytes to stdout
  zcat disk.raw.gz | vhdx convert - disk.vhdx       # raw bytes from stdin
  zcat disk.raw.gz | vhdx convert --size 10G - disk.vhdx   # ... without a temporary file
  vhdx convert s3://bucket/vms/disk.vhdx disk.raw   # a VHDX source may be a URL (fsspec)

Formats are taken from the file names unless -f/-O say otherwise: .vhdx and .avhdx are VHDX,
anything else (and '-') is raw. The new image keeps the source's block and sector sizes unless
told otherwise. Zero ranges are not allocated in a dynamic VHDX and are left as holes in raw and
fixed output. DST is written under a temporary name next to it and renamed when complete, so an
interrupted conversion leaves no DST behind; an existing DST is replaced only with --force.

stdin holds raw bytes. Without --size, a stdin stream converted to VHDX is first stored in a
sparse temporary file next to DST (its length is the virtual size); with --size it is written
straight into the image (a longer stream is an error, a shorter one reads as zeros to the end).
"""


@click.command(epilog=EPILOG, short_help="Convert an image (raw <-> VHDX, type, block and sector size).")
@click.argument("src", metavar="SRC", type=click.Path(path_type=str, allow_dash=True))
@click.argument("dst", metavar="DST", type=click.Path(path_type=str, allow_dash=True))
@click.option("-f", "--source-format", "src_format", type=click.Choice(["raw", "vhdx"]), default=None,
              help="Format of SRC (default: from its name).")
@click.option("-O", "--output-format", "dst_format", type=click.Choice(["raw", "vhdx"]), default=None,
              help="Format of DST (default: from its name).")
@click.option("--type", "disk_type", type=click.Choice(["dynamic", "fixed"]), default=None,
              help="VHDX type of DST (default: dynamic).")
@click.option("--block-size", type=SIZE, default=None,
              help="Block size of DST, a power of two from 1M to 256M (default: the source's, else 32M).")
@click.option("--logical-sector-size", type=click.Choice(["512", "4096"]), default=None,
              help="Logical sector size of DST (default: the source's, else 512).")
@click.option("--physical-sector-size", type=click.Choice(["512", "4096"]), default=None,
              help="Physical sector size of DST (default: the source's, else 4096).")
@click.option("--size", type=SIZE, default=None,
              help="Virtual size of DST (default: the source's); lets stdin stream straight into a VHDX.")
@click.option("--preallocate", is_flag=True, help="With --type fixed: allocate the payload on the file system.")
@click.option("--force", is_flag=True, help="Replace DST if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@progress_option
@parent_options
def command(src: str, dst: str, src_format: str | None, dst_format: str | None, disk_type: str | None,
            block_size: int | None, logical_sector_size: str | None, physical_sector_size: str | None,
            size: int | None, preallocate: bool, force: bool, as_json: bool, quiet: bool, show_progress: bool | None,
            parent: str | None, parent_search: tuple[str, ...], ignore_id_mismatch: bool) -> None:
    """Convert SRC into a new image DST ('-' for stdin or stdout: raw bytes)."""
    src_format = src_format or infer_format(src)
    dst_format = dst_format or infer_format(dst)
    if src == "-" and src_format == "vhdx":
        raise CommandError("stdin can only be read as raw bytes (a VHDX source must be a file)")
    if dst == "-":
        if dst_format == "vhdx":
            raise CommandError("only raw bytes can be written to stdout (a VHDX image must be a file)")
        if as_json:
            raise CommandError("--json cannot be used when the image itself goes to stdout")
        if sys.stdout.isatty():
            raise CommandError("refusing to write disk contents to a terminal; redirect or pipe stdout")
    if dst_format == "raw":
        given = [name for name, value in (("--type", disk_type), ("--block-size", block_size),
                                          ("--logical-sector-size", logical_sector_size),
                                          ("--physical-sector-size", physical_sector_size)) if value is not None]
        if preallocate:
            given.append("--preallocate")
        if given:
            verb = "applies" if len(given) == 1 else "apply"
            raise CommandError(f"{', '.join(given)} {verb} to VHDX output only (DST is raw; use -O vhdx?)")
    if is_url(dst):
        raise CommandError(f"{dst}: the destination must be a local file (URLs are read-only)")
    if is_url(src) and src_format == "raw":
        raise CommandError(f"{src}: only VHDX images can be read by URL (a raw source must be a local file or '-')")
    if src_format == "raw" and src != "-":
        _warn_if_vhdx(src)
    try:
        with progress_callback(show_progress, "converting") as callback:
            result = convert(
                src, dst, src_format=src_format, dst_format=dst_format, disk_type=disk_type, block_size=block_size,
                logical_sector_size=int(logical_sector_size) if logical_sector_size else None,
                physical_sector_size=int(physical_sector_size) if physical_sector_size else None,
                size=size, preallocate=preallocate, progress=callback, overwrite=force,
                parent_search=parent_search, parent=parent, ignore_id_mismatch=ignore_id_mismatch)
    except FileExistsError:
        raise CommandError(f"{dst}: file exists (use --force to replace it)") from None
    except ValueError as err:
        raise CommandError(str(err)) from None
    if as_json:
        emit_json(operation_document(result))
    elif not quiet and dst != "-":
        click.echo(_summary(result))


def _summary(result: ConvertResult) -> str:
    kind = result.destination_format
    if result.disk_type:
        kind += f", {result.disk_type}, {format_size(result.block_size or 0)} blocks"
    allocated = f", {result.blocks_allocated} blocks allocated" if result.destination_format == "vhdx" else ""
    chain = f" ({result.source_layers} layers flattened)" if result.source_layers > 1 else ""
    return (f"Converted '{result.source}' ({result.source_format}){chain} to '{result.destination}' ({kind}): "
            f"{format_size(result.virtual_size)} virtual, {format_size(result.bytes_written)} written{allocated}, "
            f"file {format_size(result.file_size_after or 0)}, in {result.seconds:.2f} s")


def _warn_if_vhdx(src: str) -> None:
    """A file read as raw that starts like a VHDX is most likely a misnamed image: say so."""
    try:
        if not stat.S_ISREG(os.stat(src).st_mode):
            return
        with open(src, "rb") as f:
            head = f.read(len(FILE_IDENTIFIER_SIGNATURE))
    except OSError:
        return  # the conversion itself will report it
    if head == FILE_IDENTIFIER_SIGNATURE:
        click.echo(f"vhdx: warning: {src} looks like a VHDX image but is read as raw; pass -f vhdx to convert "
                   "its virtual disk", err=True)
