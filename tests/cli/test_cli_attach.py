"""``vhdx attach`` / ``vhdx detach``: the pre-attach check (corruptions and a pending log refuse,
leaks pass with a note, differencing chains must open), ``--dry-run`` printing the exact
PowerShell, ``--json`` and text output from recorded Hyper-V responses, ``--list``,
``--list-backends``, remote-path rules, and a third-party backend found through a real entry point.

Oracles: the single change crafted into each image (tests/craft.py), the documented cmdlet lines,
the tree-sitter PowerShell grammar for the printed script, and the recordings' own values.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from craft import read_bytes, read_layout, set_bat_entry, unchanged, write_log_entries

import vhdx
from attach.backend_support import install_fake_backend
from attach.ps_support import parse
from vhdx.constants import LOG_SECTOR_SIZE, PayloadBlockState
from vhdx.model.log import DataWrite, build_entry
from vhdx_cli.attach import hyperv
from vhdx_cli.attach.powershell import LOCAL_PRELUDE, DryRunRunner, quote

MiB = 1 << 20
RECORDED = Path(__file__).parent.parent / "attach" / "recorded"
Invoke = Callable[..., Result]


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    path = tmp_path / "it's a disk.vhdx"  # a quote in the name: the script must quote it
    with vhdx.create(path, 64 * MiB, block_size=MiB) as disk:
        disk.pwrite(0, b"\x11" * (2 * MiB))
    return path


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- --dry-run -----------------------------------------------------------------------------------------
def test_dry_run_prints_the_exact_powershell(invoke: Invoke, image: Path) -> None:
    with unchanged(image):
        result = invoke("attach", "--backend", "hyperv", "--dry-run", image)
    assert result.exit_code == 0, result.stderr
    script = hyperv.attach_script(str(image), read_only=True, no_drive_letter=False)
    assert result.stdout == f"{DryRunRunner().header()}\n{LOCAL_PRELUDE}{script.text}\n"
    # The documented command line, with the path single-quoted and its quote doubled.
    assert f"$disk = Mount-VHD -Path {quote(str(image))} -ReadOnly -PassThru | Get-Disk" in result.stdout.splitlines()
    assert "it''s a disk.vhdx" in result.stdout
    parsed = parse(result.stdout)
    assert not parsed.has_error, parsed.errors
    assert "Mount-VHD" in parsed.commands
    assert result.stderr == ""


def test_dry_run_writable_without_drive_letters(invoke: Invoke, image: Path) -> None:
    result = invoke("attach", "-b", "hyperv", "--dry-run", "--writable", "--no-drive-letter", image)
    assert result.exit_code == 0, result.stderr
    assert f"$disk = Mount-VHD -Path {quote(str(image))} -NoDriveLetter -PassThru | Get-Disk" in result.stdout


def test_dry_run_json(invoke: Invoke, image: Path) -> None:
    result = invoke("attach", "--backend", "hyperv", "--dry-run", "--json", image)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    script = hyperv.attach_script(str(image), read_only=True, no_drive_letter=False)
    assert document == {"dry-run": True, "backend": "hyperv", "operation": "attach",
                        "commands": [f"{DryRunRunner().header()}\n{LOCAL_PRELUDE}{script.text}"]}


def test_dry_run_vm(invoke: Invoke, image: Path) -> None:
    result = invoke("attach", "--vm", "web 01", "--writable", "--dry-run", "-o", "controller-number=0",
                    "-o", "controller-location=3", image)
    assert result.exit_code == 0, result.stderr  # --vm alone selects the hyperv backend
    assert (f"Add-VMHardDiskDrive -VMName 'web 01' -Path {quote(str(image))} -ControllerType SCSI "
            "-ControllerNumber 0 -ControllerLocation 3") in result.stdout.splitlines()


def test_vm_needs_writable(invoke: Invoke, image: Path) -> None:
    result = invoke("attach", "--vm", "web01", "--dry-run", image)
    assert result.exit_code == 1
    assert "Hyper-V cannot give a virtual machine a read-only disk: pass --writable" in one_line(result.stderr)
    assert result.stdout == ""


def test_dry_run_remote(invoke: Invoke, image: Path) -> None:
    result = invoke("attach", "--host", "hv01", "--user", "CORP\\admin", "--dry-run", "D:\\VMs\\web01.vhdx")
    assert result.exit_code == 0, result.stderr
    # The file is on the host: not checked here, and said so.
    assert one_line(result.stderr) == ("vhdx: note: D:\\VMs\\web01.vhdx is not a file of this machine, so it was not "
                                       "checked (it is read on hv01)")
    assert result.stdout.startswith("# host hv01, over WinRM/PSRP (pypsrp), as one script:\n$ErrorActionPreference")
    assert "[Console]::OutputEncoding" not in result.stdout  # the local prelude is for powershell.exe only


def test_remote_refuses_posix_path(invoke: Invoke, image: Path) -> None:
    result = invoke("attach", "--host", "hv01", "--dry-run", image)
    assert result.exit_code == 1
    assert "must be a Windows path on that host" in one_line(result.stderr)


def test_detach_dry_run(invoke: Invoke) -> None:
    result = invoke("detach", "--backend", "hyperv", "--dry-run", "\\\\.\\PhysicalDrive4")
    assert result.exit_code == 0, result.stderr
    assert "Dismount-VHD -DiskNumber 4" in result.stdout.splitlines()
    result = invoke("detach", "--vm", "web01", "--dry-run", "--json", "SCSI:0:1")
    document = json.loads(result.stdout)
    assert document["dry-run"] is True and document["detached"] is False
    assert "-ControllerType SCSI -ControllerNumber 0 -ControllerLocation 1" in document["commands"][0]


# --- the check before attaching --------------------------------------------------------------------------
def test_check_refuses_a_corrupt_image(invoke: Invoke, image: Path) -> None:
    layout = read_layout(image)
    set_bat_entry(image, layout.payload_entry_offset(20), PayloadBlockState.FULLY_PRESENT, 200 * MiB)
    with unchanged(image):
        result = invoke("attach", "--backend", "hyperv", "--dry-run", image)
    assert result.exit_code == 1
    line = one_line(result.stderr)
    assert line.startswith(f"vhdx: {image}: refusing to attach: vhdx check found 1 corruption(s): {image}: BAT: "
                           "payload block 20 lies at 0xc800000, past the end of the file")
    assert "--skip-check" in line
    assert result.stdout == ""  # nothing was (or would have been) run
    skipped = invoke("attach", "--backend", "hyperv", "--dry-run", "--skip-check", image)
    assert skipped.exit_code == 0 and "Mount-VHD" in skipped.stdout


def test_check_refuses_a_pending_log(invoke: Invoke, image: Path) -> None:
    # A valid, unreplayed log entry: Windows would replay it (writing the file) on attach.
    layout = read_layout(image)
    at = layout.payload_entry_offset(0)
    sector_at = at - at % LOG_SECTOR_SIZE
    sector = read_bytes(image, sector_at, LOG_SECTOR_SIZE)
    guid = uuid.uuid4()
    raw = build_entry(log_guid=guid, sequence_number=1, tail=0, flushed_file_offset=layout.file_size,
                      last_file_offset=layout.file_size, writes=[DataWrite(sector_at, bytes(sector))])
    write_log_entries(image, [(0, raw)], guid)
    with unchanged(image):
        result = invoke("attach", "--backend", "hyperv", "--dry-run", image)
    assert result.exit_code == 1
    assert "log: the log holds 1 unreplayed entry" in one_line(result.stderr)


def test_leaks_pass_with_a_note(invoke: Invoke, image: Path) -> None:
    with open(image, "ab") as f:
        f.write(b"\x5a" * 4096)
    result = invoke("attach", "--backend", "hyperv", "--dry-run", image)
    assert result.exit_code == 0, result.stderr
    assert one_line(result.stderr) == (f"vhdx: note: {image}: 1 MiB of leaked (unreferenced) space; harmless to the "
                                       "data, 'vhdx compact' reclaims it")
    assert "Mount-VHD" in result.stdout
    assert invoke("attach", "-q", "--backend", "hyperv", "--dry-run", image).stderr == ""


@pytest.fixture()
def chain(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "chain"
    folder.mkdir()
    parent = folder / "base.vhdx"
    with vhdx.create(parent, 16 * MiB, block_size=MiB) as disk:
        disk.pwrite(0, b"\x22" * MiB)
    child = folder / "child.avhdx"
    with vhdx.create(child, parent=parent) as disk:
        disk.pwrite(MiB, b"\x33" * MiB)
    return child, parent


def test_differencing_chain_is_validated(invoke: Invoke, chain: tuple[Path, Path], tmp_path: Path) -> None:
    child, parent = chain
    ok = invoke("attach", "--backend", "hyperv", "--dry-run", child)
    assert ok.exit_code == 0, ok.stderr
    # The parent moved away: refused; found again with --parent-search.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(parent, elsewhere / parent.name)
    refused = invoke("attach", "--backend", "hyperv", "--dry-run", child)
    assert refused.exit_code == 1
    assert f"vhdx: {child}: refusing to attach" in one_line(refused.stderr)
    found = invoke("attach", "--backend", "hyperv", "--dry-run", "--parent-search", elsewhere, child)
    assert found.exit_code == 0, found.stderr


def test_differencing_parent_changed_after_the_child(invoke: Invoke, chain: tuple[Path, Path]) -> None:
    child, parent = chain
    with vhdx.open(parent, "r+b") as disk:  # a write changes the parent's DataWriteGuid
        disk.pwrite(0, b"\x44" * 4096)
    refused = invoke("attach", "--backend", "hyperv", "--dry-run", child)
    assert refused.exit_code == 1
    assert "refusing to attach" in one_line(refused.stderr)
    assert invoke("attach", "--backend", "hyperv", "--dry-run", "--ignore-id-mismatch", child).exit_code == 0


def test_missing_local_image(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke("attach", "--backend", "hyperv", "--dry-run", tmp_path / "nope.vhdx")
    assert result.exit_code == 1
    assert one_line(result.stderr) == f"vhdx: {tmp_path / 'nope.vhdx'}: No such file or directory"


# --- recorded Hyper-V responses --------------------------------------------------------------------------
def test_attach_json_from_recorded_responses(invoke: Invoke) -> None:
    result = invoke("attach", "--host", "hv01", "-o", f"replay={RECORDED / 'attach_readonly.json'}", "--json",
                    "D:\\VMs\\web01.vhdx")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert list(document) == ["backend", "image", "target", "read-only", "details"]
    assert (document["backend"], document["image"], document["target"], document["read-only"]) == \
        ("hyperv", "D:\\VMs\\web01.vhdx", "\\\\.\\PhysicalDrive3", True)
    details = document["details"]
    assert (details["disk-number"], details["host"], details["drive-letters"]) == (3, "hv01", ["F"])
    assert [p["number"] for p in details["partitions"]] == [1, 2, 3]


def test_attach_text_and_quiet(invoke: Invoke) -> None:
    args = ("attach", "--host", "hv01", "-o", f"replay={RECORDED / 'attach_readonly.json'}", "D:\\VMs\\web01.vhdx")
    lines = invoke(*args).stdout.splitlines()
    assert lines[0] == "D:\\VMs\\web01.vhdx: attached as \\\\.\\PhysicalDrive3 (read-only, backend hyperv)"
    assert "    disk-number: 3" in lines
    assert "    drive-letters: F" in lines
    assert "    partition 3: F: size 137314172928 type Basic" in lines
    assert invoke(*args[:1], "-q", *args[1:]).stdout == "\\\\.\\PhysicalDrive3\n"


def test_attach_error_from_hyperv(invoke: Invoke, tmp_path: Path) -> None:
    errors = json.loads((RECORDED / "errors.json").read_text(encoding="utf-8"))["responses"]
    recording = tmp_path / "in-use.json"
    recording.write_text(json.dumps({"responses": [errors[0]]}))
    result = invoke("attach", "--host", "hv01", "-q", "-o", f"replay={recording}", "D:\\VMs\\web01.vhdx")
    assert result.exit_code == 1
    assert one_line(result.stderr) == (
        "vhdx: attach failed (recorded: in-use.json): Failed to mount the disk. The system failed to mount "
        "'D:\\VMs\\web01.vhdx'. The process cannot access the file because it is being used by another process. "
        "(0x80070020).")


def test_list_json_and_text(invoke: Invoke) -> None:
    args = ("attach", "--list", "--backend", "hyperv", "-o", f"replay={RECORDED / 'list.json'}")
    document = json.loads(invoke(*args, "--json").stdout)
    assert [d["target"] for d in document] == ["\\\\.\\PhysicalDrive3", "\\\\.\\PhysicalDrive5", "SCSI:0:0", "IDE:1:0"]
    text = invoke(*args).stdout.splitlines()
    assert text[2] == "SCSI:0:0\trw\thyperv\tD:\\VMs\\web01.vhdx (VM web01)"


def test_detach_with_recorded_response(invoke: Invoke, tmp_path: Path) -> None:
    recording = tmp_path / "detach.json"
    recording.write_text(json.dumps({"responses": [{"expect": ["Dismount-VHD -DiskNumber 3"],
                                                    "result": {"Path": "D:\\VMs\\web01.vhdx", "WasAttached": True}}]}))
    result = invoke("detach", "--backend", "hyperv", "-o", f"replay={recording}", "3")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "3: detached (backend hyperv)\n"


# --- usage and backends -----------------------------------------------------------------------------------
def test_usage_errors(invoke: Invoke, image: Path) -> None:
    assert invoke("attach").exit_code == 2
    assert invoke("attach", "--list", image).exit_code == 2
    bad = invoke("attach", "--backend", "hyperv", "--dry-run", "-o", "novalue", image)
    assert bad.exit_code == 1 and "expected KEY=VALUE" in one_line(bad.stderr)


def test_unknown_backend(invoke: Invoke, image: Path) -> None:
    result = invoke("attach", "--backend", "iscsi", image)
    assert result.exit_code == 1
    assert one_line(result.stderr).startswith("vhdx: unknown attach backend 'iscsi' (known: ")


@pytest.mark.skipif(os.name == "nt", reason="checks the message given off Windows")
def test_hyperv_not_runnable_here(invoke: Invoke, image: Path) -> None:
    result = invoke("attach", "--backend", "hyperv", image)
    assert result.exit_code == 1
    assert one_line(result.stderr) == ("vhdx: the hyperv backend cannot be used here: Hyper-V runs on Windows only: "
                                       "use --host to drive a remote Hyper-V host, or --dry-run to see the PowerShell")


def test_third_party_backend_through_entry_point(invoke: Invoke, image: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    module = install_fake_backend(tmp_path / "site", monkeypatch)
    result = invoke("attach", "--backend", "fake", "--json", "-o", "speed=fast", image)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"backend": "fake", "image": str(image), "target": "fake0", "read-only": True,
                                         "details": {"options": {"speed": "fast"}}}
    kinds = [call[0] for call in module.CALLS]  # type: ignore[attr-defined]
    assert kinds == ["init", "attach"]
    listed = json.loads(invoke("attach", "--list-backends", "--json").stdout)
    fake = next(row for row in listed if row["name"] == "fake")
    assert fake == {"name": "fake", "target": "vhdx_fake_attach_backend:FakeBackend",
                    "origin": "entry point of vhdx-fake-backend", "available": True,
                    "detail": "always (a test double)"}
    assert invoke("detach", "--backend", "fake", "fake0").stdout == "fake0: detached (backend fake)\n"
    vm = invoke("attach", "--backend", "fake", "--vm", "x", "--writable", image)
    assert vm.exit_code == 1 and "has no virtual machines" in one_line(vm.stderr)


def test_fake_backend_attach_still_checks(invoke: Invoke, image: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    module = install_fake_backend(tmp_path / "site", monkeypatch)
    layout = read_layout(image)
    set_bat_entry(image, layout.payload_entry_offset(20), PayloadBlockState.FULLY_PRESENT, 200 * MiB)
    result = invoke("attach", "--backend", "fake", image)
    assert result.exit_code == 1 and "refusing to attach" in result.stderr
    assert [c[0] for c in module.CALLS] == ["init"]  # type: ignore[attr-defined]  # attach never called
