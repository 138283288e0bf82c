"""``vhdx attach``: attach an image to this host or to a Hyper-V virtual machine, after checking
it; ``--list`` shows what is attached, ``--list-backends`` which backends exist."""

from __future__ import annotations

import os
from typing import Any

import click

from ..attach.backends import (
    AttachError,
    AttachRequest,
    Attachment,
    Backend,
    BackendSettings,
    create_backend,
    default_backend_name,
    parse_options,
    registered_backends,
)
from ..attach.preflight import preflight
from ..errors import CommandError
from ..options import parent_options
from ..output import INDENT, emit_json, emit_lines

EPILOG = """\b
Examples:
  vhdx attach disk.vhdx                             # Windows: Mount-VHD read-only; Linux: nbd
  vhdx attach --backend hyperv D:\\VMs\\disk.vhdx --no-drive-letter
  vhdx attach --backend hyperv --dry-run disk.vhdx  # print the exact PowerShell, run nothing
  vhdx attach --vm web01 --writable D:\\VMs\\data.vhdx -o controller-location=2
  vhdx attach --host hv01 --user CORP\\admin D:\\VMs\\disk.vhdx     # remote, needs vhdx[hyperv]
  vhdx attach --list --json
  vhdx attach --list-backends
  vhdx detach \\\\.\\PhysicalDrive3                    # see 'vhdx detach --help'

\b
Backends (--backend):
  hyperv   Hyper-V's PowerShell cmdlets (Mount-VHD, Add-VMHardDiskDrive), on this Windows
           machine or on --host over WinRM/PSRP (pip install 'vhdx[hyperv]'); the default on
           Windows and whenever --host or --vm is given
  nbd      the kernel's NBD client fed by vhdx's own NBD server; the default elsewhere
  fuse     the virtual disk as a file in a FUSE mount (--mountpoint)
  Others come from installed packages (entry-point group vhdx.attach_backends).

Before attaching, IMAGE and its parents are checked as 'vhdx check' does, and a differencing
chain is opened to prove its links: corruptions (a pending log among them: Windows would replay
it on attach) refuse the attach, leaks are only reported; --skip-check attaches anyway. With
--host the image is a Windows path on that host; it is checked here only when the same path
also exists on this machine (otherwise a note says it was not checked). --parent,
--parent-search and --ignore-id-mismatch steer the local check (and backends that open the
image themselves); Hyper-V follows the paths recorded in the image.

Images are attached read-only unless --writable. Hyper-V cannot give a VM a read-only disk, so
--vm needs --writable. --dry-run shows the commands without running them (hyperv). Remote
passwords come from VHDX_HYPERV_PASSWORD or a prompt.

\b
Options for hyperv (-o KEY=VALUE, repeatable):
  controller-type=SCSI|IDE, controller-number=N, controller-location=N   (with --vm)
  powershell=EXE, timeout=SECONDS                                          (local)
  port=N, ssl=yes|no, auth=negotiate|ntlm|kerberos|credssp|basic|certificate,
  cert-validation=yes|no                                                   (--host)

--json prints {"backend", "image", "target", "read-only", "details"} (a list with --list);
-q prints only the target (what 'vhdx detach' takes). Exit status: 0 attached, 1 refused or
failed (one line on stderr), 2 usage error.
"""


@click.command(epilog=EPILOG, short_help="Attach an image to this host or a Hyper-V VM (checked first).")
@click.argument("image", metavar="IMAGE", required=False, type=click.Path(path_type=str))
@click.option("--backend", "-b", "backend_name", metavar="NAME", default=None,
              help="Attach backend (default: hyperv on Windows or with --host/--vm, else nbd).")
@click.option("--vm", metavar="NAME", default=None, help="Add IMAGE to this Hyper-V virtual machine.")
@click.option("--device", metavar="DEV", default=None, help="Device to use (nbd: /dev/nbdN).")
@click.option("--mountpoint", metavar="DIR", default=None, help="Where to mount (fuse).")
@click.option("--read-only/--writable", "read_only", default=True, show_default=True,
              help="Attach without or with write access.")
@click.option("--no-drive-letter", is_flag=True, help="hyperv: mount without assigning drive letters.")
@click.option("--host", metavar="HOST", default=None, help="A remote Hyper-V host (WinRM/PSRP).")
@click.option("--user", metavar="USER", default=None, help="Account on --host (DOMAIN\\user or user@REALM).")
@click.option("-o", "--option", "option_pairs", multiple=True, metavar="KEY=VALUE",
              help="A backend option (repeatable; see below).")
@click.option("--dry-run", is_flag=True, help="Print the commands (hyperv: the exact PowerShell) and run nothing.")
@click.option("--skip-check", is_flag=True, help="Attach without checking the image first.")
@click.option("--list", "list_mode", is_flag=True, help="List what the backend has attached (no IMAGE).")
@click.option("--list-backends", is_flag=True, help="List the registered backends and whether they work here.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document instead of text.")
@click.option("--quiet", "-q", is_flag=True, help="Print only the target; no notes.")
@parent_options
def command(image: str | None, backend_name: str | None, vm: str | None, device: str | None, mountpoint: str | None,
            read_only: bool, no_drive_letter: bool, host: str | None, user: str | None, option_pairs: tuple[str, ...],
            dry_run: bool, skip_check: bool, list_mode: bool, list_backends: bool, as_json: bool, quiet: bool,
            parent: str | None, parent_search: tuple[str, ...], ignore_id_mismatch: bool) -> None:
    """Attach IMAGE (checked first) to this host, or to a Hyper-V VM with --vm."""
    if list_backends:
        _list_backends(as_json)
        return
    if list_mode:
        if image is not None:
            raise click.UsageError("--list takes no IMAGE")
    elif image is None:
        raise click.UsageError("missing IMAGE (or --list / --list-backends)")
    options = parse_options(option_pairs)
    name = backend_name or default_backend_name(host=host, vm=vm)
    commands: list[str] = []
    settings = BackendSettings(host=host, user=user, dry_run=dry_run, options=options,
                               echo=commands.append if as_json else click.echo)
    backend = open_backend(name, settings)
    if list_mode:
        attachments = backend.list_attached()
        if dry_run:
            _dry_run_json(as_json, name, "list", commands)
        elif as_json:
            emit_json([a.to_dict() for a in attachments])
        else:
            emit_lines(list_lines(attachments))
        return
    assert image is not None
    if not skip_check:
        _check(image, host=host, quiet=quiet, parent=parent, parent_search=parent_search,
               ignore_id_mismatch=ignore_id_mismatch)
    request_options = dict(options)
    if no_drive_letter:
        request_options["no-drive-letter"] = "yes"
    req = AttachRequest(image=image, read_only=read_only, vm=vm, device=device, mountpoint=mountpoint,
                        options=request_options, parent=parent, parent_search=tuple(parent_search),
                        ignore_id_mismatch=ignore_id_mismatch)
    attachment = backend.add_to_vm(req) if vm is not None else backend.attach(req)
    if dry_run:
        _dry_run_json(as_json, name, "add-to-vm" if vm is not None else "attach", commands)
    elif as_json:
        emit_json(attachment.to_dict())
    elif quiet:
        click.echo(attachment.target)
    else:
        emit_lines(attachment_lines(attachment, verb="added to VM" if vm is not None else "attached"))


def open_backend(name: str, settings: BackendSettings) -> Backend:
    """Create backend ``name`` and make sure it can work here (CommandError saying why not)."""
    backend = create_backend(name, settings)
    ok, why = backend.available()
    if not ok:
        raise AttachError(f"the {name} backend cannot be used here: {why}")
    return backend


def _check(image: str, *, host: str | None, quiet: bool, parent: str | None, parent_search: tuple[str, ...],
           ignore_id_mismatch: bool) -> None:
    if host is not None and not os.path.exists(image):
        if not quiet:
            click.echo(f"vhdx: note: {image} is not a file of this machine, so it was not checked "
                       f"(it is read on {host})", err=True)
        return
    result = preflight(image, parent=parent, parent_search=parent_search, ignore_id_mismatch=ignore_id_mismatch)
    if not quiet:
        for note in result.notes:
            click.echo(f"vhdx: note: {note}", err=True)


def _dry_run_json(as_json: bool, backend: str, operation: str, commands: list[str]) -> None:
    if as_json:
        emit_json({"dry-run": True, "backend": backend, "operation": operation, "commands": commands})


def _list_backends(as_json: bool) -> None:
    rows: list[dict[str, Any]] = []
    for name, spec in sorted(registered_backends().items()):
        try:
            ok, why = create_backend(name).available()
        except CommandError as err:
            ok, why = False, str(err)
        rows.append({"name": name, "target": spec.target, "origin": spec.origin, "available": ok, "detail": why})
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        state = "available" if row["available"] else "unavailable"
        click.echo(f"{row['name']:<10}{state:<13}{row['origin']}: {row['detail']}")


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "-"
    return str(value)


def attachment_lines(a: Attachment, *, verb: str = "attached") -> list[str]:
    """``IMAGE: attached as TARGET (read-only, backend NAME)`` and the details, one per line."""
    mode = "read-only" if a.read_only else "read-write"
    lines = [f"{a.image}: {verb} as {a.target} ({mode}, backend {a.backend})"]
    for key, value in a.details.items():
        if key == "partitions" and isinstance(value, list):
            for part in value:
                where = part.get("drive-letter") and f"{part['drive-letter']}:" or ", ".join(part.get("access-paths") or [])
                lines.append(f"{INDENT}partition {part.get('number')}: {where or '(no drive letter)'} "
                             f"size {_value_text(part.get('size'))} type {_value_text(part.get('type'))}")
        elif isinstance(value, list):
            lines.append(f"{INDENT}{key}: {', '.join(_value_text(v) for v in value) or '-'}")
        else:
            lines.append(f"{INDENT}{key}: {_value_text(value)}")
    return lines


def list_lines(attachments: list[Attachment]) -> list[str]:
    if not attachments:
        return ["nothing attached"]
    lines = []
    for a in attachments:
        mode = "ro" if a.read_only else "rw"
        vm = a.details.get("vm")
        where = f" (VM {vm})" if vm else ""
        lines.append(f"{a.target}\t{mode}\t{a.backend}\t{a.image}{where}")
    return lines
