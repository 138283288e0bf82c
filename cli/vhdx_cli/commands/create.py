"""``vhdx create``: make a new fixed, dynamic or differencing image (New-VHD, qemu-img create)."""

from __future__ import annotations

import click

import vhdx
from vhdx._units import format_size

from ..errors import CommandError
from ..options import SIZE

EPILOG = """\b
Examples:
  vhdx create disk.vhdx 10G                      # dynamic, 32 MiB blocks
  vhdx create disk.vhdx 64T --block-size 256M
  vhdx create data.vhdx 20G --type fixed         # every block allocated (sparse file)
  vhdx create data.vhdx 20G --type fixed --preallocate
  vhdx create native4k.vhdx 1T --logical-sector-size 4096
  vhdx create child.avhdx --parent base.vhdx     # differencing: size from the parent

Sizes accept K, M, G and T suffixes (binary units). An existing file is never replaced unless
--force is given. Defaults follow Hyper-V: 32 MiB blocks (2 MiB for differencing disks), 512-byte
logical and 4096-byte physical sectors, a 1 MiB log.
"""


@click.command(epilog=EPILOG, short_help="Create a new VHDX image.")
@click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))
@click.argument("size", metavar="[SIZE]", type=SIZE, required=False)
@click.option("--type", "disk_type", type=click.Choice(["dynamic", "fixed", "differencing"]), default=None,
              help="Disk type (default: differencing with --parent, else dynamic).")
@click.option("--block-size", type=SIZE, default=None, help="Block size, a power of two from 1M to 256M.")
@click.option("--logical-sector-size", type=click.Choice(["512", "4096"]), default="512", show_default=True)
@click.option("--physical-sector-size", type=click.Choice(["512", "4096"]), default="4096", show_default=True)
@click.option("--parent", metavar="PARENT", type=click.Path(path_type=str), default=None,
              help="Parent image of a differencing disk (SIZE then defaults to the parent's).")
@click.option("--log-size", type=SIZE, default=vhdx.constants.DEFAULT_LOG_SIZE, show_default=True,
              help="Log size, a multiple of 1M.")
@click.option("--preallocate", is_flag=True, help="Fixed disks: allocate the payload on the file system.")
@click.option("--force", is_flag=True, help="Replace IMAGE if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def command(image: str, size: int | None, disk_type: str | None, block_size: int | None, logical_sector_size: str,
            physical_sector_size: str, parent: str | None, log_size: int, preallocate: bool, force: bool,
            quiet: bool) -> None:
    """Create IMAGE, of SIZE bytes, as a dynamic, fixed or differencing VHDX."""
    if size is None and parent is None:
        raise CommandError("a SIZE is needed (only a differencing disk takes its parent's size)")
    if disk_type == "differencing" and parent is None:
        raise CommandError("--type differencing needs --parent")
    if parent is not None and disk_type not in (None, "differencing"):
        raise CommandError(f"--parent makes a differencing disk, not a {disk_type} one")
    try:
        disk = vhdx.create(image, size, disk_type=disk_type, block_size=block_size,
                           logical_sector_size=int(logical_sector_size),
                           physical_sector_size=int(physical_sector_size), parent=parent, log_size=log_size,
                           overwrite=force, preallocate=preallocate)
    except FileExistsError:
        raise CommandError(f"{image}: file exists (use --force to replace it)") from None
    except ValueError as err:
        raise CommandError(f"{image}: {err}") from None
    with disk:
        if not quiet:
            extra = f" parent={parent}" if parent else ""
            click.echo(f"Formatting '{image}', fmt=vhdx type={disk.disk_type} size={disk.size} "
                       f"({format_size(disk.size)}) block_size={disk.block_size} "
                       f"logical_sector_size={disk.logical_sector_size} "
                       f"physical_sector_size={disk.physical_sector_size}{extra}")
