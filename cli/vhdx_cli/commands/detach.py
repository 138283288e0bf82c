"""``vhdx detach``: undo ``vhdx attach`` (a host attachment, or a disk of a Hyper-V VM)."""

from __future__ import annotations

import click

from ..attach.backends import BackendSettings, default_backend_name, parse_options
from ..output import emit_json
from .attach import open_backend

EPILOG = """\b
Examples:
  vhdx detach '\\\\.\\PhysicalDrive3'                  # hyperv: by disk (or just: 3)
  vhdx detach D:\\VMs\\disk.vhdx                       # hyperv: by image path
  vhdx detach --vm web01 D:\\VMs\\data.vhdx            # remove the drive from the VM
  vhdx detach --vm web01 SCSI:0:2                     # ... or by controller slot
  vhdx detach --host hv01 --user CORP\\admin 3
  vhdx detach --backend hyperv --dry-run D:\\VMs\\disk.vhdx
  vhdx detach /dev/nbd0                               # nbd (the default off Windows)

TARGET is what 'vhdx attach' printed as the target (also listed by 'vhdx attach --list'): for
hyperv a disk number or \\\\.\\PhysicalDriveN, or the image path (detaching an image that is not
attached does nothing); with --vm, the image path or the controller slot (SCSI:0:2, IDE:1:0).
The backend defaults as for 'vhdx attach'. --dry-run prints the exact PowerShell (hyperv).
Exit status: 0 detached, 1 failed (one line on stderr), 2 usage error.
"""


@click.command(epilog=EPILOG, short_help="Detach an image attached with 'vhdx attach'.")
@click.argument("target", metavar="TARGET")
@click.option("--backend", "-b", "backend_name", metavar="NAME", default=None,
              help="Attach backend (default: hyperv on Windows or with --host/--vm, else nbd).")
@click.option("--vm", metavar="NAME", default=None, help="Remove TARGET from this Hyper-V virtual machine.")
@click.option("--host", metavar="HOST", default=None, help="A remote Hyper-V host (WinRM/PSRP).")
@click.option("--user", metavar="USER", default=None, help="Account on --host.")
@click.option("-o", "--option", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="A backend option (repeatable; see 'vhdx attach --help').")
@click.option("--dry-run", is_flag=True, help="Print the commands (hyperv: the exact PowerShell) and run nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@click.option("--quiet", "-q", is_flag=True, help="Print nothing on success.")
def command(target: str, backend_name: str | None, vm: str | None, host: str | None, user: str | None,
            option_pairs: tuple[str, ...], dry_run: bool, as_json: bool, quiet: bool) -> None:
    """Detach TARGET (from this host, or from a Hyper-V VM with --vm)."""
    name = backend_name or default_backend_name(host=host, vm=vm)
    commands: list[str] = []
    settings = BackendSettings(host=host, user=user, dry_run=dry_run, options=parse_options(option_pairs),
                               echo=commands.append if as_json else click.echo)
    backend = open_backend(name, settings)
    if vm is not None:
        backend.remove_from_vm(target, vm)
    else:
        backend.detach(target)
    if as_json:
        document = {"backend": name, "target": target, "vm": vm, "dry-run": dry_run, "detached": not dry_run}
        if dry_run:
            document["commands"] = commands
        emit_json(document)
    elif not quiet and not dry_run:
        click.echo(f"{target}: {'removed from VM ' + vm if vm else 'detached'} (backend {name})")
