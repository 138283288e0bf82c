"""``vhdx mount``: the virtual disk (and its partitions) as plain files, through FUSE."""

from __future__ import annotations

import os

import click

from ..attach import fuse
from ..attach.backends import AttachRequest
from ..options import parent_options
from ..output import emit_json

EPILOG = """\b
Examples:
  vhdx mount disk.vhdx /mnt/vhd                 # /mnt/vhd/disk, read-only
  vhdx mount disk.vhdx /mnt/vhd --partitions    # ... plus /mnt/vhd/part1, part2, ...
  sudo mount -o ro,loop /mnt/vhd/part1 /mnt/fs  # then mount a file system from a partition
  vhdx mount child.avhdx /mnt/vhd --writable    # writes land in the child only
  vhdx unmount /mnt/vhd

The mount runs in a background process and this command returns once the files are there
(--foreground keeps it in this process until unmounted). Needs FUSE: the fuse kernel module,
libfuse3 (Debian: apt install fuse3) and the Python package mfusepy (pip install 'vhdx[fuse]').
Read-only unless --writable; with --writable, fsync on a file (or unmounting) makes the writes
durable, and the image stays consistent if the process dies. Files cannot change size.
"""


@click.command(epilog=EPILOG, short_help="Mount an image's disk and partitions as files (FUSE).")
@click.argument("image", metavar="IMAGE", type=click.Path(path_type=str, exists=True, dir_okay=False))
@click.argument("mountpoint", metavar="MOUNTPOINT", type=click.Path(path_type=str, exists=True, file_okay=False))
@click.option("--writable", is_flag=True, help="Allow writes to the disk (and partition) files.")
@click.option("--partitions", is_flag=True, help="Also show each MBR/GPT partition as its own file.")
@click.option("--foreground", is_flag=True, help="Serve from this process until unmounted.")
@click.option("--json", "as_json", is_flag=True, help="Print the mount as JSON.")
@parent_options
def command(image: str, mountpoint: str, writable: bool, partitions: bool, foreground: bool, as_json: bool,
            parent: str | None, parent_search: tuple[str, ...], ignore_id_mismatch: bool) -> None:
    """Mount IMAGE's virtual disk on MOUNTPOINT as the file 'disk' (and 'partN' files)."""
    if foreground:
        fuse.run_foreground(image, mountpoint, writable=writable, partitions=partitions, parent=parent,
                            parent_search=parent_search, ignore_id_mismatch=ignore_id_mismatch)
        return
    request = AttachRequest(image=image, read_only=not writable, mountpoint=mountpoint)
    attachment = fuse.mount(request, partitions=partitions, parent=parent, parent_search=parent_search,
                            ignore_id_mismatch=ignore_id_mismatch)
    files = attachment.details.get("files", [])
    if as_json:
        emit_json({"image": attachment.image, "mountpoint": attachment.target, "read-only": attachment.read_only,
                   "pid": attachment.details.get("pid"), "files": [os.path.join(attachment.target, f) for f in files]})
    else:
        mode = "read-only" if attachment.read_only else "writable"
        click.echo(f"Mounted '{image}' on {attachment.target} ({mode}): {', '.join(files)}")
