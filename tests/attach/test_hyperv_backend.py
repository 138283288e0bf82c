"""The Hyper-V backend against recorded responses (tests/attach/recorded/*.json).

The recordings are written by hand, modelled on the documented output properties of Get-VHD,
Get-Disk, Get-Partition and Get-VMHardDiskDrive and on Hyper-V's error records; none was captured
from a real Hyper-V host. What is tested: the scripts sent (through each recording's ``expect``
and the runner's log), how the JSON answers become ``Attachment`` values, and that errors come out
as PowerShell's own message. Values asserted below are the recordings' inputs carried through.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vhdx_cli.attach import hyperv
from vhdx_cli.attach.backends import AttachError, AttachRequest, Attachment, Backend, BackendSettings
from vhdx_cli.attach.hyperv import HyperVBackend, host_path
from vhdx_cli.attach.powershell import DryRunRunner, LocalRunner, PowerShellError, PsrpRunner, RecordedRunner

RECORDED = Path(__file__).parent / "recorded"


def backend_for(name: str, **settings: Any) -> tuple[HyperVBackend, RecordedRunner]:
    runner = RecordedRunner.from_file(RECORDED / name)
    return HyperVBackend(BackendSettings(**settings), runner=runner), runner


def response(name: str, label: str) -> dict[str, Any]:
    for r in json.loads((RECORDED / name).read_text(encoding="utf-8"))["responses"]:
        if r.get("name") == label:
            return r  # type: ignore[no-any-return]
    raise LookupError(label)


def test_is_a_backend() -> None:
    assert isinstance(HyperVBackend(BackendSettings(dry_run=True)), Backend)


def test_attach_read_only() -> None:
    backend, runner = backend_for("attach_readonly.json")
    a = backend.attach(AttachRequest("D:\\VMs\\web01.vhdx"))
    assert not runner.unused()
    assert "-NoDriveLetter" not in runner.scripts[0]
    assert a.backend == "hyperv"
    assert a.image == "D:\\VMs\\web01.vhdx"
    assert a.target == "\\\\.\\PhysicalDrive3"
    assert a.read_only is True
    d = a.details
    assert (d["disk-number"], d["vhd-format"], d["vhd-type"], d["size"], d["block-size"]) == \
        (3, "VHDX", "Dynamic", 137438953472, 33554432)
    assert d["parent-path"] is None  # Get-VHD's empty string for "no parent"
    assert d["host"] == "localhost"
    assert d["partition-style"] == "GPT"
    assert [p["number"] for p in d["partitions"]] == [1, 2, 3]
    assert d["drive-letters"] == ["F"]
    assert d["partitions"][2]["access-paths"][0] == "F:\\"
    assert d["partitions"][1]["access-paths"] == []
    json.dumps(a.to_dict())  # JSON-ready


def test_attach_differencing_writable_forward_slashes() -> None:
    backend, runner = backend_for("attach_differencing_writable.json", host="hv01")
    a = backend.attach(AttachRequest("D:/VMs/web01_2F1A9C3E-1111-4B2B-9C3D-5E6F7A8B9C0D.avhdx", read_only=False))
    assert "-ReadOnly" not in runner.scripts[0]
    assert a.read_only is False
    assert a.details["vhd-type"] == "Differencing"
    assert a.details["parent-path"] == "D:\\VMs\\web01.vhdx"
    assert a.details["host"] == "hv01"
    assert a.details["drive-letters"] == ["G"]


def test_attach_no_drive_letter_option() -> None:
    runner = RecordedRunner([{"expect": ["Mount-VHD -Path 'C:\\d.vhdx' -ReadOnly -NoDriveLetter -PassThru"],
                              "result": {"Path": "C:\\d.vhdx", "DiskNumber": 9, "ReadOnly": True, "Partitions": {
                                  "PartitionNumber": 1, "DriveLetter": "\u0000", "AccessPaths": None}}}])
    a = HyperVBackend(runner=runner).attach(AttachRequest("C:\\d.vhdx", options={"no-drive-letter": "yes"}))
    # One partition arrives as an object, not a list (ConvertTo-Json unrolls), its letter as NUL.
    assert a.details["partitions"] == [{"number": 1, "drive-letter": None, "offset": None, "size": None,
                                        "type": None, "access-paths": []}]
    assert a.details["drive-letters"] == []


@pytest.mark.parametrize("label", ["in use", "missing file", "access denied", "already attached",
                                   "no hyper-v module", "powershell did not start"])
def test_attach_errors_carry_powershells_message(label: str) -> None:
    r = response("errors.json", label)
    backend = HyperVBackend(runner=RecordedRunner([r]))
    with pytest.raises(PowerShellError) as info:
        backend.attach(AttachRequest("D:\\VMs\\web01.vhdx"))
    message = str(info.value)
    assert message.startswith("attach failed (recorded): ")
    if r["stdout"]:
        first_line = json.loads(r["stdout"])["error"]["message"].splitlines()[0]
        assert first_line in message
        assert info.value.category == json.loads(r["stdout"])["error"]["category"]
    else:
        assert message.endswith("Program 'powershell.exe' failed to run: Access is denied (exit status 1)")
    if label == "no hyper-v module":
        assert "Microsoft-Hyper-V-Management-PowerShell" in message


def test_list_attached() -> None:
    backend, runner = backend_for("list.json")
    found = backend.list_attached()
    assert [(a.target, a.image, a.read_only) for a in found] == [
        ("\\\\.\\PhysicalDrive3", "D:\\VMs\\web01.vhdx", True),
        ("\\\\.\\PhysicalDrive5", "E:\\Evidence\\laptop.vhdx", True),
        ("SCSI:0:0", "D:\\VMs\\web01.vhdx", False),
        ("IDE:1:0", "D:\\VMs\\legacy.vhd", False),
    ]
    # Enum numbers (as ConvertTo-Json prints enums) are turned into Hyper-V's names.
    assert (found[1].details["vhd-format"], found[1].details["vhd-type"]) == ("VHDX", "Fixed")
    assert found[2].details["vm"] == "web01"
    assert found[3].details["controller-type"] == "IDE"


def test_list_nothing_attached() -> None:
    runner = RecordedRunner([{"result": {"Mounted": [], "VMDrives": None}}])
    assert HyperVBackend(runner=runner).list_attached() == []


def test_add_to_vm_and_remove_by_slot() -> None:
    backend, runner = backend_for("vm_add_remove.json")
    a = backend.add_to_vm(AttachRequest("D:\\VMs\\data.vhdx", read_only=False, vm="web 01",
                                        options={"controller-location": "2"}))
    assert a == Attachment("hyperv", "D:\\VMs\\data.vhdx", "SCSI:0:2", False, {
        "vm": "web 01", "controller-type": "SCSI", "controller-number": 0, "controller-location": 2,
        "path": "D:\\VMs\\data.vhdx", "disk-number": None, "computer-name": "HV01", "host": "localhost"})
    backend.remove_from_vm("scsi:0:2", "web 01")  # slot names are case-insensitive
    assert not runner.unused()


def test_attach_with_vm_goes_to_the_vm() -> None:
    backend, runner = backend_for("vm_add_remove.json")
    a = backend.attach(AttachRequest("D:\\VMs\\data.vhdx", read_only=False, vm="web 01",
                                     options={"controller-location": "2"}))
    assert a.target == "SCSI:0:2"
    assert "Add-VMHardDiskDrive" in runner.scripts[0]


def test_add_to_vm_needs_writable_and_a_vm() -> None:
    backend = HyperVBackend(runner=RecordedRunner([]))
    with pytest.raises(AttachError, match="read-only disk: pass --writable"):
        backend.add_to_vm(AttachRequest("D:\\x.vhdx", vm="v"))
    with pytest.raises(AttachError, match="needs a VM name"):
        backend.add_to_vm(AttachRequest("D:\\x.vhdx", read_only=False))


def test_remove_from_vm_by_path() -> None:
    runner = RecordedRunner([{"expect": ["Get-VMHardDiskDrive -VMName 'v' | Where-Object Path -eq 'D:\\a b.vhdx'"],
                              "result": []}])
    HyperVBackend(runner=runner).remove_from_vm("D:/a b.vhdx", "v")
    assert not runner.unused()


@pytest.mark.parametrize(("target", "expected"), [
    ("3", "Dismount-VHD -DiskNumber 3"),
    ("\\\\.\\PhysicalDrive12", "Dismount-VHD -DiskNumber 12"),
    ("\\\\.\\physicaldrive7", "Dismount-VHD -DiskNumber 7"),
    ("D:\\VMs\\web01.vhdx", "if ($vhd.Attached) { Dismount-VHD -Path 'D:\\VMs\\web01.vhdx' }"),
])
def test_detach_targets(target: str, expected: str) -> None:
    runner = RecordedRunner([{"expect": [expected], "result": {"Path": "D:\\VMs\\web01.vhdx", "WasAttached": True}}])
    HyperVBackend(runner=runner).detach(target)
    assert not runner.unused()


def test_remote_host_refuses_a_posix_path_before_running_anything() -> None:
    runner = RecordedRunner([])
    backend = HyperVBackend(BackendSettings(host="hv01"), runner=runner)
    with pytest.raises(AttachError, match="must be a Windows path on that host"):
        backend.attach(AttachRequest("/srv/images/disk.vhdx"))
    with pytest.raises(AttachError, match="must be a Windows path"):
        backend.detach("relative\\disk.vhdx")
    assert runner.scripts == []


def test_host_path_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert host_path("D:/VMs/a.vhdx", remote="h") == "D:\\VMs\\a.vhdx"
    assert host_path("\\\\srv\\share\\a.vhdx", remote="h") == "\\\\srv\\share\\a.vhdx"
    assert host_path("//srv/share/a.vhdx", remote=None) == "\\\\srv\\share\\a.vhdx"
    monkeypatch.chdir(tmp_path)
    assert host_path("a.vhdx", remote=None) == str(tmp_path / "a.vhdx")  # PowerShell's cwd may differ


def test_device_and_mountpoint_do_not_apply() -> None:
    with pytest.raises(AttachError, match="--device and --mountpoint do not apply"):
        HyperVBackend(runner=RecordedRunner([])).attach(AttachRequest("D:\\x.vhdx", device="/dev/nbd0"))


@pytest.mark.parametrize(("options", "message"), [
    ({"colour": "red"}, "has no option colour"),
    ({"no-drive-letter": "maybe"}, "expected yes or no"),
    ({"controller-type": "NVMe"}, "expected SCSI or IDE"),
    ({"controller-location": "-1"}, "expected a whole number"),
    ({"controller-number": "0; Stop-Computer"}, "expected a whole number"),
])
def test_bad_options(options: dict[str, str], message: str) -> None:
    backend = HyperVBackend(runner=RecordedRunner([]))
    with pytest.raises(AttachError, match=message):
        backend.add_to_vm(AttachRequest("D:\\x.vhdx", vm="v", read_only=False, options=options))


def test_runner_selection(tmp_path: Path) -> None:
    assert isinstance(HyperVBackend(BackendSettings(dry_run=True, host="h")).runner, DryRunRunner)
    remote = HyperVBackend(BackendSettings(host="hv01", user="u", options={"port": "5985", "ssl": "no",
                                                                          "auth": "NTLM", "cert-validation": "off"}))
    assert isinstance(remote.runner, PsrpRunner)
    s = remote.runner.settings
    assert (s.host, s.user, s.port, s.ssl, s.auth, s.cert_validation) == ("hv01", "u", 5985, False, "ntlm", False)
    local = HyperVBackend(BackendSettings(options={"powershell": "pwsh", "timeout": "30"}))
    assert isinstance(local.runner, LocalRunner) and (local.runner.requested, local.runner.timeout) == ("pwsh", 30.0)
    recorded = tmp_path / "r.json"
    recorded.write_text('{"responses": []}')
    assert isinstance(HyperVBackend(BackendSettings(options={"replay": str(recorded)})).runner, RecordedRunner)
    with pytest.raises(AttachError, match="--user needs --host"):
        HyperVBackend(BackendSettings(user="u"))


def test_dry_run_returns_placeholders_and_shows_scripts() -> None:
    shown: list[str] = []
    backend = HyperVBackend(BackendSettings(dry_run=True, echo=shown.append))
    assert backend.available()[0]
    a = backend.attach(AttachRequest("D:\\x.vhdx"))
    assert a.target == hyperv.DRY_RUN_TARGET and a.details == {"dry-run": True}
    assert backend.list_attached() == []
    backend.detach("2")
    assert len(shown) == 3 and "Mount-VHD -Path 'D:\\x.vhdx' -ReadOnly -PassThru" in shown[0]
    assert "Dismount-VHD -DiskNumber 2" in shown[2]


def test_available_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hyperv.sys, "platform", "linux")
    ok, why = HyperVBackend().available()
    assert not ok and "--host" in why and "--dry-run" in why
    monkeypatch.setattr(hyperv.sys, "platform", "win32")
    monkeypatch.setattr(hyperv, "find_powershell", lambda requested=None: None)
    ok, why = HyperVBackend().available()
    assert not ok and "powershell.exe not found" in why


def test_attach_without_disk_number_targets_the_path() -> None:
    # Get-Disk found nothing after Mount-VHD: detach must still be possible, by path.
    runner = RecordedRunner([{"result": {"Path": "C:\\d.vhdx", "DiskNumber": None, "Partitions": []}}])
    a = HyperVBackend(runner=runner).attach(AttachRequest("C:\\d.vhdx"))
    assert a.target == "C:\\d.vhdx"
