"""The ``hyperv`` attach backend: Hyper-V's PowerShell cmdlets, run on this Windows machine or on
a remote Hyper-V host over WinRM/PSRP.

    attach          Mount-VHD -Path P [-ReadOnly] [-NoDriveLetter] -PassThru | Get-Disk
                    (refused when Get-VHD says the image is attached already); returns the disk
                    number (target ``\\\\.\\PhysicalDriveN``) and the partitions with their
                    drive letters and access paths
    detach          Dismount-VHD -Path P, or -DiskNumber N for ``N`` / ``\\\\.\\PhysicalDriveN``;
                    a path that is not attached is left alone (detach is idempotent)
    list_attached   Get-VHD of every disk whose bus type is "File Backed Virtual" and that is
                    Attached, plus every VM drive (Get-VM | Get-VMHardDiskDrive)
    add_to_vm       Add-VMHardDiskDrive -VMName V -Path P -ControllerType SCSI
                    [-ControllerNumber N] [-ControllerLocation L], then Get-VMHardDiskDrive for
                    the slot it took (target ``SCSI:0:1``)
    remove_from_vm  Get-VMHardDiskDrive -VMName V | Where-Object Path -eq P (or the slot)
                    | Remove-VMHardDiskDrive

Paths. PowerShell resolves a relative path against its own current directory, so local paths are
made absolute first. On a remote host the image must be named by a Windows path ON THAT HOST
(``D:\\VMs\\disk.vhdx`` or ``\\\\server\\share\\disk.vhdx``); a POSIX path is refused. Forward
slashes in a Windows path become backslashes (Get-VHD reports backslashes, and the VM-drive
lookup compares paths).

Hyper-V gives a VM no read-only disk: ``add_to_vm`` needs ``read_only=False`` (``--writable``).

Options (``-o KEY=VALUE``): ``powershell`` (executable, local), ``timeout`` (seconds, local),
``port``, ``ssl`` (yes/no), ``auth`` (negotiate, ntlm, kerberos, credssp, basic, certificate),
``cert-validation`` (yes/no), ``password`` (prefer VHDX_HYPERV_PASSWORD) for a remote host;
``no-drive-letter`` (yes/no), ``controller-type`` (SCSI or IDE), ``controller-number``,
``controller-location`` per request; ``replay`` (a recorded-response file: tests and demos).

None of this has been run against a real Hyper-V host: it is tested through the exact script
text and recorded responses modelled on the cmdlets' documented output (README, "Attaching
images").
"""

from __future__ import annotations

import ntpath
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from ..errors import CommandError
from .backends import AttachError, AttachRequest, Attachment, BackendSettings
from .powershell import (
    DryRunRunner,
    LocalRunner,
    PsrpRunner,
    PsrpSettings,
    RecordedRunner,
    Runner,
    Script,
    find_powershell,
    quote,
)

CONNECTION_OPTIONS = ("powershell", "timeout", "port", "ssl", "auth", "cert-validation", "password", "replay")
REQUEST_OPTIONS = ("no-drive-letter", "controller-type", "controller-number", "controller-location")
CONTROLLER_TYPES = ("SCSI", "IDE")
DRY_RUN_TARGET = "(dry run)"

# Values of the Hyper-V enums, for output that carries numbers instead of names (ConvertTo-Json
# prints enums as numbers; the scripts convert them, this covers older recordings). The numbers
# are those of Msvm_VirtualHardDiskSettingData (Format 2 VHD, 3 VHDX, 4 VHDSet; Type 2 Fixed,
# 3 Dynamic, 4 Differencing) and of the ControllerType enum (0 IDE, 1 SCSI).
VHD_FORMATS = {2: "VHD", 3: "VHDX", 4: "VHDSet"}
VHD_TYPES = {2: "Fixed", 3: "Dynamic", 4: "Differencing"}
CONTROLLER_NUMBERS = {0: "IDE", 1: "SCSI"}

_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|[\\/]{2}[^\\/])")
_PHYSICAL_DRIVE = re.compile(r"^(?:\\\\\.\\PhysicalDrive)?(\d+)$", re.IGNORECASE)
_SLOT = re.compile(r"^(SCSI|IDE):(\d+):(\d+)$", re.IGNORECASE)
_YES = ("1", "yes", "true", "on")
_NO = ("0", "no", "false", "off")

# PowerShell helpers shared by the scripts: one record per VHD (Get-VHD's documented
# properties), per partition (Get-Partition) and per VM drive (Get-VMHardDiskDrive).
_VHD_RECORD = """\
function ConvertTo-VhdxRecord($vhd) {
    [ordered]@{
        Path = $vhd.Path
        VhdFormat = [string]$vhd.VhdFormat
        VhdType = [string]$vhd.VhdType
        FileSize = $vhd.FileSize
        Size = $vhd.Size
        BlockSize = $vhd.BlockSize
        LogicalSectorSize = $vhd.LogicalSectorSize
        PhysicalSectorSize = $vhd.PhysicalSectorSize
        ParentPath = $vhd.ParentPath
        DiskIdentifier = [string]$vhd.DiskIdentifier
        Attached = [bool]$vhd.Attached
        DiskNumber = $vhd.DiskNumber
        ComputerName = $vhd.ComputerName
    }
}"""
_PARTITION_RECORD = """\
function ConvertTo-VhdxPartition($part) {
    $letter = [string]$part.DriveLetter
    if (-not $letter -or $letter -eq [string][char]0) { $letter = $null }
    [ordered]@{
        PartitionNumber = $part.PartitionNumber
        DriveLetter = $letter
        Offset = $part.Offset
        Size = $part.Size
        Type = [string]$part.Type
        AccessPaths = @($part.AccessPaths)
    }
}"""
_DRIVE_RECORD = """\
function ConvertTo-VhdxDrive($drive) {
    [ordered]@{
        VMName = $drive.VMName
        ControllerType = [string]$drive.ControllerType
        ControllerNumber = $drive.ControllerNumber
        ControllerLocation = $drive.ControllerLocation
        Path = $drive.Path
        DiskNumber = $drive.DiskNumber
        ComputerName = $drive.ComputerName
    }
}"""


# --- script builders (pure: text in, text out) -------------------------------------------------------
def attach_script(path: str, *, read_only: bool, no_drive_letter: bool) -> Script:
    switches = (" -ReadOnly" if read_only else "") + (" -NoDriveLetter" if no_drive_letter else "")
    p = quote(path)
    body = f"""\
{_VHD_RECORD}
{_PARTITION_RECORD}
$before = Get-VHD -Path {p}
if ($before.Attached) {{ throw ('already attached as disk ' + $before.DiskNumber + ': ' + $before.Path) }}
$disk = Mount-VHD -Path {p}{switches} -PassThru | Get-Disk
$result = ConvertTo-VhdxRecord (Get-VHD -Path {p})
$result.DiskNumber = $disk.Number
$result.ReadOnly = [bool]$disk.IsReadOnly
$result.PartitionStyle = [string]$disk.PartitionStyle
$result.Partitions = @(Get-Partition -DiskNumber $disk.Number -ErrorAction SilentlyContinue | ForEach-Object {{ ConvertTo-VhdxPartition $_ }})"""
    return Script("attach", body)


def detach_script(*, path: str | None = None, disk_number: int | None = None) -> Script:
    if (path is None) == (disk_number is None):
        raise ValueError("detach_script takes a path or a disk number")
    if disk_number is not None:
        n = int(disk_number)
        body = f"""\
$vhd = Get-VHD -DiskNumber {n}
Dismount-VHD -DiskNumber {n}
$result = [ordered]@{{ Path = $vhd.Path; DiskNumber = {n}; WasAttached = $true }}"""
    else:
        assert path is not None
        p = quote(path)
        body = f"""\
$vhd = Get-VHD -Path {p}
if ($vhd.Attached) {{ Dismount-VHD -Path {p} }}
$result = [ordered]@{{ Path = $vhd.Path; DiskNumber = $vhd.DiskNumber; WasAttached = [bool]$vhd.Attached }}"""
    return Script("detach", body)


def list_script() -> Script:
    body = f"""\
{_VHD_RECORD}
{_DRIVE_RECORD}
$mounted = @(Get-Disk | Where-Object {{ [string]$_.BusType -eq 'File Backed Virtual' }} | ForEach-Object {{
    $vhd = Get-VHD -DiskNumber $_.Number -ErrorAction SilentlyContinue
    if ($vhd -and $vhd.Attached) {{
        $record = ConvertTo-VhdxRecord $vhd
        $record.ReadOnly = [bool]$_.IsReadOnly
        $record
    }}
}})
$drives = @(Get-VM | Get-VMHardDiskDrive | ForEach-Object {{ ConvertTo-VhdxDrive $_ }})
$result = [ordered]@{{ Mounted = $mounted; VMDrives = $drives }}"""
    return Script("list", body)


def add_to_vm_script(vm: str, path: str, *, controller_type: str = "SCSI", controller_number: int | None = None,
                     controller_location: int | None = None) -> Script:
    if controller_type not in CONTROLLER_TYPES:
        raise ValueError(f"controller type {controller_type!r}")
    slot = f" -ControllerType {controller_type}"
    if controller_number is not None:
        slot += f" -ControllerNumber {int(controller_number)}"
    if controller_location is not None:
        slot += f" -ControllerLocation {int(controller_location)}"
    v, p = quote(vm), quote(path)
    body = f"""\
{_DRIVE_RECORD}
Add-VMHardDiskDrive -VMName {v} -Path {p}{slot}
$drive = @(Get-VMHardDiskDrive -VMName {v} | Where-Object Path -eq {p}) | Select-Object -First 1
if (-not $drive) {{ throw ('the drive was added but Get-VMHardDiskDrive does not list it: ' + {p}) }}
$result = ConvertTo-VhdxDrive $drive"""
    return Script("add to VM", body)


def remove_from_vm_script(vm: str, *, path: str | None = None, slot: tuple[str, int, int] | None = None) -> Script:
    if (path is None) == (slot is None):
        raise ValueError("remove_from_vm_script takes a path or a controller slot")
    v = quote(vm)
    if slot is not None:
        kind, number, location = slot
        if kind not in CONTROLLER_TYPES:
            raise ValueError(f"controller type {kind!r}")
        select = (f"Get-VMHardDiskDrive -VMName {v} -ControllerType {kind} -ControllerNumber {int(number)} "
                  f"-ControllerLocation {int(location)}")
        what = quote(f"{kind}:{int(number)}:{int(location)}")
    else:
        assert path is not None
        what = quote(path)
        select = f"Get-VMHardDiskDrive -VMName {v} | Where-Object Path -eq {what}"
    body = f"""\
{_DRIVE_RECORD}
$drives = @({select})
if ($drives.Count -eq 0) {{ throw ('no drive of VM ' + {v} + ' matches ' + {what}) }}
$result = @($drives | ForEach-Object {{ ConvertTo-VhdxDrive $_ }})
$drives | Remove-VMHardDiskDrive"""
    return Script("remove from VM", body)


# --- paths and options ------------------------------------------------------------------------------
def is_windows_path(path: str) -> bool:
    """``C:\\...``, ``C:/...`` or ``\\\\server\\share\\...`` (absolute Windows paths)."""
    return bool(_WINDOWS_ABSOLUTE.match(path))


def host_path(image: str, *, remote: str | None) -> str:
    """The path to hand to PowerShell: Windows paths with backslashes; local paths made absolute;
    on a remote host only Windows paths are accepted (the file lives there)."""
    if is_windows_path(image):
        return ntpath.normpath(image.replace("/", "\\"))
    if remote is not None:
        raise AttachError(f"{image}: on a remote Hyper-V host the image must be a Windows path on that host "
                          f"(D:\\VMs\\disk.vhdx or \\\\server\\share\\disk.vhdx), not a path of this machine")
    return os.path.abspath(image)


def _flag(options: Mapping[str, str], key: str, default: bool) -> bool:
    value = options.get(key)
    if value is None:
        return default
    if value.strip().lower() in _YES:
        return True
    if value.strip().lower() in _NO:
        return False
    raise AttachError(f"-o {key}={value}: expected yes or no")


def _number(options: Mapping[str, str], key: str) -> int | None:
    value = options.get(key)
    if value is None:
        return None
    try:
        number = int(value, 10)
    except ValueError:
        raise AttachError(f"-o {key}={value}: expected a whole number") from None
    if number < 0:
        raise AttachError(f"-o {key}={value}: expected a whole number")
    return number


def check_options(options: Mapping[str, str]) -> None:
    """Refuse unknown keys and malformed values, whichever operation would read them."""
    unknown = sorted(set(options) - set(CONNECTION_OPTIONS) - set(REQUEST_OPTIONS))
    if unknown:
        raise AttachError(f"the hyperv backend has no option {', '.join(unknown)} "
                          f"(known: {', '.join(CONNECTION_OPTIONS + REQUEST_OPTIONS)})")
    for key in ("no-drive-letter", "ssl", "cert-validation"):
        _flag(options, key, False)
    for key in ("port", "controller-number", "controller-location"):
        _number(options, key)
    kind = options.get("controller-type")
    if kind is not None and kind.upper() not in CONTROLLER_TYPES:
        raise AttachError(f"-o controller-type={kind}: expected SCSI or IDE")


# --- parsing results ----------------------------------------------------------------------------------
def _enum(value: Any, names: Mapping[int, str]) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value, value)
    return value


def _items(value: Any) -> list[dict[str, Any]]:
    """A JSON array of objects (one object or null also accepted: ConvertTo-Json unrolls)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    raise AttachError(f"unexpected output from PowerShell: {value!r}")


def _record(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AttachError(f"unexpected output from PowerShell: {value!r}")
    return value


def vhd_details(record: Mapping[str, Any]) -> dict[str, Any]:
    """Get-VHD's properties under kebab-case keys, enums as names."""
    keys = (("Path", "path"), ("VhdFormat", "vhd-format"), ("VhdType", "vhd-type"), ("FileSize", "file-size"),
            ("Size", "size"), ("BlockSize", "block-size"), ("LogicalSectorSize", "logical-sector-size"),
            ("PhysicalSectorSize", "physical-sector-size"), ("ParentPath", "parent-path"),
            ("DiskIdentifier", "disk-identifier"), ("Attached", "attached"), ("DiskNumber", "disk-number"),
            ("ComputerName", "computer-name"))
    out = {key: record.get(name) for name, key in keys if name in record}
    if "vhd-format" in out:
        out["vhd-format"] = _enum(out["vhd-format"], VHD_FORMATS)
    if "vhd-type" in out:
        out["vhd-type"] = _enum(out["vhd-type"], VHD_TYPES)
    if out.get("parent-path") == "":
        out["parent-path"] = None
    return out


def partition_details(record: Mapping[str, Any]) -> dict[str, Any]:
    letter = record.get("DriveLetter")
    if isinstance(letter, str):
        letter = letter.strip("\x00 ") or None
    return {"number": record.get("PartitionNumber"), "drive-letter": letter, "offset": record.get("Offset"),
            "size": record.get("Size"), "type": record.get("Type"),
            "access-paths": [p for p in (record.get("AccessPaths") or []) if isinstance(p, str)]}


def drive_details(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"vm": record.get("VMName"), "controller-type": _enum(record.get("ControllerType"), CONTROLLER_NUMBERS),
            "controller-number": record.get("ControllerNumber"), "controller-location": record.get("ControllerLocation"),
            "path": record.get("Path"), "disk-number": record.get("DiskNumber"),
            "computer-name": record.get("ComputerName")}


def physical_drive(number: Any) -> str:
    return f"\\\\.\\PhysicalDrive{number}"


def slot_name(details: Mapping[str, Any]) -> str:
    return f"{details['controller-type']}:{details['controller-number']}:{details['controller-location']}"


# --- the backend ---------------------------------------------------------------------------------------
class HyperVBackend:
    """Hyper-V through PowerShell, locally or on ``settings.host`` (see the module docstring)."""

    name = "hyperv"

    def __init__(self, settings: BackendSettings | None = None, *, runner: Runner | None = None) -> None:
        self.settings = settings or BackendSettings()
        options = dict(self.settings.options)
        check_options(options)
        self.options = options
        self.remote = self.settings.host
        self.runner = runner if runner is not None else self._make_runner()

    def _make_runner(self) -> Runner:
        s, o = self.settings, self.options
        if s.user is not None and s.host is None:
            raise AttachError("--user needs --host (local PowerShell runs as the current user)")
        if s.dry_run:
            return DryRunRunner(s.echo, host=s.host, executable=o.get("powershell"))
        if o.get("replay"):
            return RecordedRunner.from_file(o["replay"])
        if s.host is not None:
            return PsrpRunner(PsrpSettings(
                host=s.host, user=s.user, password=o.get("password"), port=_number(o, "port"),
                ssl=_flag(o, "ssl", True), auth=o.get("auth", "negotiate").lower(),
                cert_validation=_flag(o, "cert-validation", True)))
        timeout = o.get("timeout")
        try:
            seconds = float(timeout) if timeout is not None else None
        except ValueError:
            raise AttachError(f"-o timeout={timeout}: expected seconds") from None
        return LocalRunner(o.get("powershell"), timeout=seconds)

    # --- Backend protocol ---
    def available(self) -> tuple[bool, str]:
        runner = self.runner
        if runner.dry_run:
            return True, f"dry run: the PowerShell is shown, not run ({runner.where})"
        if isinstance(runner, RecordedRunner):
            return True, f"recorded responses from {runner.source}"
        if isinstance(runner, PsrpRunner):
            try:
                runner.import_pypsrp()
            except CommandError as err:
                return False, str(err)
            return True, f"Hyper-V on {runner.settings.host} over WinRM/PSRP"
        if isinstance(runner, LocalRunner):
            exe = find_powershell(runner.requested)
            if sys.platform != "win32" and runner.requested is None:
                return False, ("Hyper-V runs on Windows only: use --host to drive a remote Hyper-V host, or "
                               "--dry-run to see the PowerShell")
            if exe is None:
                return False, f"{runner.requested or 'powershell.exe'} not found on PATH"
            return True, f"local Hyper-V through {exe}"
        return True, runner.where

    def attach(self, req: AttachRequest) -> Attachment:
        check_options(req.options)
        if req.vm is not None:
            return self.add_to_vm(req)
        if req.device is not None or req.mountpoint is not None:
            raise AttachError("the hyperv backend chooses the disk itself: --device and --mountpoint do not apply "
                              "(drive letters come from Windows; see --no-drive-letter)")
        path = host_path(req.image, remote=self.remote)
        no_letter = _flag(req.options, "no-drive-letter", False)
        result = self.runner.run(attach_script(path, read_only=req.read_only, no_drive_letter=no_letter))
        if self.runner.dry_run:
            return Attachment(self.name, path, DRY_RUN_TARGET, req.read_only, {"dry-run": True})
        record = _record(result)
        details = vhd_details(record)
        details["host"] = self.remote or "localhost"
        details["read-only"] = bool(record.get("ReadOnly", req.read_only))
        details["partition-style"] = record.get("PartitionStyle")
        details["partitions"] = [partition_details(p) for p in _items(record.get("Partitions"))]
        details["drive-letters"] = [p["drive-letter"] for p in details["partitions"] if p["drive-letter"]]
        image = str(record.get("Path") or path)
        number = details.get("disk-number")
        # Without a disk number (Get-Disk found nothing) the image path is what detach takes.
        target = physical_drive(number) if number is not None else image
        return Attachment(self.name, image, target, details["read-only"], details)

    def detach(self, target: str) -> None:
        match = _PHYSICAL_DRIVE.match(target.strip())
        if match:
            script = detach_script(disk_number=int(match.group(1)))
        else:
            script = detach_script(path=host_path(target, remote=self.remote))
        self.runner.run(script)

    def list_attached(self) -> list[Attachment]:
        result = self.runner.run(list_script())
        if self.runner.dry_run:
            return []
        document = _record(result)
        host = self.remote or "localhost"
        out: list[Attachment] = []
        for record in _items(document.get("Mounted")):
            details = vhd_details(record)
            details["host"] = host
            read_only = bool(record.get("ReadOnly", False))
            out.append(Attachment(self.name, str(details.get("path")), physical_drive(details.get("disk-number")),
                                  read_only, details))
        for record in _items(document.get("VMDrives")):
            details = drive_details(record)
            details["host"] = host
            out.append(Attachment(self.name, str(details.get("path")), slot_name(details), False, details))
        return out

    def add_to_vm(self, req: AttachRequest) -> Attachment:
        check_options(req.options)
        if req.vm is None:
            raise AttachError("add_to_vm needs a VM name (--vm NAME)")
        if req.read_only:
            raise AttachError("Hyper-V cannot give a virtual machine a read-only disk: pass --writable to add "
                              f"{req.image} to VM {req.vm} read-write")
        path = host_path(req.image, remote=self.remote)
        kind = req.options.get("controller-type", "SCSI").upper()
        script = add_to_vm_script(req.vm, path, controller_type=kind,
                                  controller_number=_number(req.options, "controller-number"),
                                  controller_location=_number(req.options, "controller-location"))
        result = self.runner.run(script)
        if self.runner.dry_run:
            return Attachment(self.name, path, DRY_RUN_TARGET, False, {"dry-run": True, "vm": req.vm})
        details = drive_details(_record(result))
        details["host"] = self.remote or "localhost"
        return Attachment(self.name, str(details.get("path") or path), slot_name(details), False, details)

    def remove_from_vm(self, image_or_target: str, vm: str) -> None:
        match = _SLOT.match(image_or_target.strip())
        if match:
            slot = (match.group(1).upper(), int(match.group(2)), int(match.group(3)))
            script = remove_from_vm_script(vm, slot=slot)
        else:
            script = remove_from_vm_script(vm, path=host_path(image_or_target, remote=self.remote))
        self.runner.run(script)
