"""``vhdx unmount``: undo ``vhdx mount``."""

from __future__ import annotations

import click

from ..attach import fuse

EPILOG = """\b
Examples:
  vhdx unmount /mnt/vhd

Unmounts (fusermount3 -u, else umount) and waits for the mount's process to flush and close the
image, so the image is complete when this command returns.
"""


@click.command(epilog=EPILOG, short_help="Unmount a 'vhdx mount'.")
@click.argument("mountpoint", metavar="MOUNTPOINT", type=click.Path(path_type=str))
@click.option("--timeout", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the image to be closed.")
def command(mountpoint: str, timeout: float) -> None:
    """Unmount MOUNTPOINT and wait until the image is closed."""
    fuse.unmount(mountpoint, timeout)
