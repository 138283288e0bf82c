"""PowerShell quoting, the exact script text of every Hyper-V operation, output parsing, and the
runners (local through a stand-in executable, remote through a stand-in pypsrp, dry run,
recorded).

Oracles: a model of PowerShell's single-quote rule and the tree-sitter PowerShell grammar
(``ps_support``); the literal command lines the Hyper-V documentation gives for each cmdlet; the
bytes a stand-in powershell.exe actually received. Nothing here runs real PowerShell or Hyper-V.
"""

from __future__ import annotations

import base64
import json
import stat
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vhdx_cli.attach import hyperv
from vhdx_cli.attach.powershell import (
    LOCAL_PRELUDE,
    PASSWORD_ENV,
    DryRunRunner,
    LocalRunner,
    PowerShellError,
    PsrpRunner,
    PsrpSettings,
    RawResult,
    RecordedRunner,
    Script,
    envelope,
    literal,
    parse_output,
    quote,
)
from vhdx_cli.errors import CommandError

from .ps_support import decode_single_quoted, parse

HOSTILE = [
    "D:\\VMs\\it's.vhdx",
    "D:\\VMs\\'; Remove-Item C:\\ -Recurse -Force; '.vhdx",
    "D:\\VMs\\$env:USERPROFILE $(Stop-Computer) ${x}.vhdx",
    "D:\\VMs\\back`tick`n`'.vhdx",
    "D:\\VMs\\semi;colon | pipe & amp > redirect.vhdx",
    "D:\\VMs\\new\nline\r\nand tab\t.vhdx",
    "D:\\VMs\\\"double\" \u201csmart\u201d.vhdx",
    "D:\\VMs\\curly \u2018single\u2019 \u201alow\u201b'.vhdx",
    "D:\\VMs\\'''.vhdx",
    "D:\\Бази\\диск 日本語 🚀.vhdx",
    "\\\\server\\share$\\disk @(1,2) #comment.vhdx",
    "",
]
ATTACH_COMMANDS = {"Get-VHD", "Mount-VHD", "Get-Disk", "Get-Partition", "ForEach-Object", "ConvertTo-VhdxRecord",
                   "ConvertTo-VhdxPartition", "ConvertTo-Json"}


# --- quoting -------------------------------------------------------------------------------------------
def test_quote_doubles_every_single_quote_character() -> None:
    assert quote("C:\\VMs\\a.vhdx") == "'C:\\VMs\\a.vhdx'"
    assert quote("it's") == "'it''s'"
    assert quote("a\u2018b\u2019c\u201ad\u201be") == "'a\u2018\u2018b\u2019\u2019c\u201a\u201ad\u201b\u201be'"
    # Characters that are special only outside single quotes pass through untouched.
    assert quote('$x `n ; " \u201c') == "'$x `n ; \" \u201c'"


def test_quote_refuses_nul() -> None:
    with pytest.raises(ValueError, match="NUL"):
        quote("a\x00b")


def test_literal_values() -> None:
    assert [literal(None), literal(True), literal(False), literal(42), literal("x'y")] == \
        ["$null", "$true", "$false", "42", "'x''y'"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_value_decodes_back_and_ends_where_written(value: str) -> None:
    quoted = quote(value)
    text = f"Get-VHD -Path {quoted}; Write-Output 'after'"
    start = text.index(quoted)
    decoded, end = decode_single_quoted(text, start)
    assert decoded == value
    assert end == start + len(quoted)  # the literal does not stop early or run on into the rest


@given(st.text(alphabet=st.one_of(st.sampled_from("'\u2018\u2019\u201a\u201b\"$`;|&\n\r\t {}()@#\\"),
                                  st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))),
               max_size=40))
def test_any_text_round_trips_through_the_model(value: str) -> None:
    quoted = quote(value)
    decoded, end = decode_single_quoted(quoted + " -ReadOnly")
    assert (decoded, end) == (value, len(quoted))


def test_model_catches_naive_quoting() -> None:
    # The oracle can fail: quoting that forgets the curly quotes lets the literal end early.
    naive = "'" + "x\u2019; Remove-Item C:\\".replace("'", "''") + "'"
    decoded, end = decode_single_quoted(naive)
    assert decoded == "x" and end < len(naive)


@pytest.mark.parametrize("value", [v for v in HOSTILE if v])
def test_hostile_path_stays_inside_its_literals(value: str) -> None:
    script = hyperv.attach_script(value, read_only=True, no_drive_letter=True)
    parsed = parse(LOCAL_PRELUDE + script.text)
    assert not parsed.has_error, parsed.errors
    # The path appears exactly where the builder put it (Get-VHD, Mount-VHD, Get-VHD), each time
    # as one whole token, and no command other than the script's own was introduced.
    assert parsed.strings.count(quote(value)) == 3
    assert set(parsed.commands) <= ATTACH_COMMANDS | {"New-Object"}


def test_parser_oracle_catches_broken_quoting() -> None:
    value = "x'; Remove-Item C:\\ -Recurse; '"
    broken = f"Mount-VHD -Path '{value}' -ReadOnly"
    assert "Remove-Item" in parse(broken).commands
    assert "Remove-Item" not in parse(f"Mount-VHD -Path {quote(value)} -ReadOnly").commands


# --- the exact script text -------------------------------------------------------------------------------
P = "D:\\VMs\\it's.vhdx"
QP = "'D:\\VMs\\it''s.vhdx'"


def lines_of(script: Script) -> list[str]:
    return [line.strip() for line in script.text.splitlines()]


def test_envelope_exact_text() -> None:
    assert envelope("$result = 1") == (
        "$ErrorActionPreference = 'Stop'\n"
        "$ProgressPreference = 'SilentlyContinue'\n"
        "try {\n"
        "$result = 1\n"
        "    $vhdxOut = [ordered]@{ ok = $true; result = $result }\n"
        "} catch {\n"
        "    $vhdxOut = [ordered]@{ ok = $false; error = [ordered]@{\n"
        "        message = $_.Exception.Message\n"
        "        id = $_.FullyQualifiedErrorId\n"
        "        category = [string]$_.CategoryInfo.Category\n"
        "    } }\n"
        "}\n"
        "ConvertTo-Json -InputObject $vhdxOut -Depth 6 -Compress\n"
    )


@pytest.mark.parametrize(("read_only", "no_letter", "switches"), [
    (True, False, " -ReadOnly"), (True, True, " -ReadOnly -NoDriveLetter"), (False, False, ""),
    (False, True, " -NoDriveLetter")])
def test_attach_script(read_only: bool, no_letter: bool, switches: str) -> None:
    lines = lines_of(hyperv.attach_script(P, read_only=read_only, no_drive_letter=no_letter))
    assert f"$before = Get-VHD -Path {QP}" in lines
    assert "if ($before.Attached) { throw ('already attached as disk ' + $before.DiskNumber + ': ' + $before.Path) }" \
        in lines
    assert f"$disk = Mount-VHD -Path {QP}{switches} -PassThru | Get-Disk" in lines
    assert f"$result = ConvertTo-VhdxRecord (Get-VHD -Path {QP})" in lines
    assert ("$result.Partitions = @(Get-Partition -DiskNumber $disk.Number -ErrorAction SilentlyContinue | "
            "ForEach-Object { ConvertTo-VhdxPartition $_ })") in lines
    # Get-VHD's documented properties are all carried, enums as strings.
    for prop in ("Path", "FileSize", "Size", "BlockSize", "LogicalSectorSize", "PhysicalSectorSize", "ParentPath",
                 "DiskNumber", "ComputerName"):
        assert f"{prop} = $vhd.{prop}" in lines
    for prop in ("VhdFormat", "VhdType", "DiskIdentifier"):
        assert f"{prop} = [string]$vhd.{prop}" in lines


def test_detach_scripts() -> None:
    assert lines_of(hyperv.detach_script(path=P))[3:6] == [
        f"$vhd = Get-VHD -Path {QP}",
        f"if ($vhd.Attached) {{ Dismount-VHD -Path {QP} }}",
        "$result = [ordered]@{ Path = $vhd.Path; DiskNumber = $vhd.DiskNumber; WasAttached = [bool]$vhd.Attached }",
    ]
    assert lines_of(hyperv.detach_script(disk_number=3))[3:6] == [
        "$vhd = Get-VHD -DiskNumber 3", "Dismount-VHD -DiskNumber 3",
        "$result = [ordered]@{ Path = $vhd.Path; DiskNumber = 3; WasAttached = $true }"]
    with pytest.raises(ValueError):
        hyperv.detach_script()


def test_list_script() -> None:
    lines = lines_of(hyperv.list_script())
    assert "$mounted = @(Get-Disk | Where-Object { [string]$_.BusType -eq 'File Backed Virtual' } | ForEach-Object {" \
        in lines
    assert "$vhd = Get-VHD -DiskNumber $_.Number -ErrorAction SilentlyContinue" in lines
    assert "if ($vhd -and $vhd.Attached) {" in lines
    assert "$drives = @(Get-VM | Get-VMHardDiskDrive | ForEach-Object { ConvertTo-VhdxDrive $_ })" in lines
    assert "$result = [ordered]@{ Mounted = $mounted; VMDrives = $drives }" in lines


def test_add_to_vm_script() -> None:
    lines = lines_of(hyperv.add_to_vm_script("web '01'", P, controller_number=0, controller_location=2))
    assert f"Add-VMHardDiskDrive -VMName 'web ''01''' -Path {QP} -ControllerType SCSI -ControllerNumber 0 " \
           "-ControllerLocation 2" in lines
    assert f"$drive = @(Get-VMHardDiskDrive -VMName 'web ''01''' | Where-Object Path -eq {QP}) | Select-Object -First 1" \
        in lines
    ide = lines_of(hyperv.add_to_vm_script("v", P, controller_type="IDE"))
    assert f"Add-VMHardDiskDrive -VMName 'v' -Path {QP} -ControllerType IDE" in ide
    with pytest.raises(ValueError):
        hyperv.add_to_vm_script("v", P, controller_type="SCSI; Stop-Computer")


def test_remove_from_vm_scripts() -> None:
    by_path = lines_of(hyperv.remove_from_vm_script("v", path=P))
    assert f"$drives = @(Get-VMHardDiskDrive -VMName 'v' | Where-Object Path -eq {QP})" in by_path
    assert f"if ($drives.Count -eq 0) {{ throw ('no drive of VM ' + 'v' + ' matches ' + {QP}) }}" in by_path
    # The drives are recorded for the result first, then removed as the body's last statement.
    ok_line = by_path.index("$vhdxOut = [ordered]@{ ok = $true; result = $result }")
    assert by_path[ok_line - 2:ok_line] == ["$result = @($drives | ForEach-Object { ConvertTo-VhdxDrive $_ })",
                                            "$drives | Remove-VMHardDiskDrive"]
    by_slot = lines_of(hyperv.remove_from_vm_script("v", slot=("SCSI", 0, 1)))
    assert ("$drives = @(Get-VMHardDiskDrive -VMName 'v' -ControllerType SCSI -ControllerNumber 0 "
            "-ControllerLocation 1)") in by_slot


def every_script(value: str) -> list[Script]:
    return [hyperv.attach_script(value, read_only=True, no_drive_letter=False),
            hyperv.detach_script(path=value), hyperv.detach_script(disk_number=7), hyperv.list_script(),
            hyperv.add_to_vm_script(value, value, controller_number=1, controller_location=0),
            hyperv.remove_from_vm_script(value, path=value), hyperv.remove_from_vm_script(value, slot=("IDE", 0, 1))]


@pytest.mark.parametrize("value", ["D:\\VMs\\plain.vhdx", HOSTILE[1], HOSTILE[5], HOSTILE[9]])
def test_every_script_parses(value: str) -> None:
    for script in every_script(value):
        parsed = parse(LOCAL_PRELUDE + script.text)
        assert not parsed.has_error, (script.operation, parsed.errors)
        assert "ConvertTo-Json" in parsed.commands
        assert "Remove-Item" not in parsed.commands and "Stop-Computer" not in parsed.commands


# --- output parsing -----------------------------------------------------------------------------------
def test_parse_ok_after_warning_lines() -> None:
    raw = RawResult('WARNING: something\r\n{"ok":true,"result":{"DiskNumber":3}}\r\n')
    assert parse_output(raw, "attach", "local PowerShell") == {"DiskNumber": 3}


def test_parse_error_envelope_keeps_powershells_message() -> None:
    raw = RawResult('{"ok":false,"error":{"message":"Access is denied.","id":"AccessDenied,Microsoft.Vhd.'
                    'PowerShell.Cmdlets.MountVhd","category":"PermissionDenied"}}')
    with pytest.raises(PowerShellError) as info:
        parse_output(raw, "attach", "host hv01")
    assert str(info.value) == "attach failed (host hv01): Access is denied."
    assert info.value.category == "PermissionDenied"
    assert info.value.error_id.startswith("AccessDenied,")


def test_parse_command_not_found_gets_a_hint() -> None:
    raw = RawResult(json.dumps({"ok": False, "error": {
        "message": "The term 'Mount-VHD' is not recognized as the name of a cmdlet, function, script file, or "
                   "operable program.", "id": "CommandNotFoundException", "category": "ObjectNotFound"}}))
    with pytest.raises(PowerShellError, match="Hyper-V PowerShell module installed"):
        parse_output(raw, "attach", "local PowerShell")


def test_parse_without_envelope_uses_stderr_and_exit_status() -> None:
    raw = RawResult("", "At line:1 char:1\r\n+ oops\r\nMissing closing '}'\r\n", 1)
    with pytest.raises(PowerShellError) as info:
        parse_output(raw, "list", "local PowerShell")
    assert str(info.value) == "list failed (local PowerShell): At line:1 char:1; + oops; Missing closing '}' (exit status 1)"


def test_parse_clixml_stderr() -> None:
    clixml = ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
              '<S S="Error">Cannot find path &apos;D:\\x&apos;_x000D__x000A_</S></Objs>')
    with pytest.raises(PowerShellError, match="Cannot find path 'D:\\\\x' \\(exit status 1\\)"):
        parse_output(RawResult("", clixml, 1), "attach", "local PowerShell")


def test_parse_remote_error_records() -> None:
    with pytest.raises(PowerShellError, match="boom; bang"):
        parse_output(RawResult("", error_records=("boom", "bang"), exit_code=1), "attach", "host h")


def test_powershell_error_is_a_command_error() -> None:
    assert issubclass(PowerShellError, CommandError)


# --- LocalRunner, through a stand-in powershell.exe ------------------------------------------------------
FAKE_POWERSHELL = """\
#!{python}
import base64, json, os, sys
args = sys.argv[1:]
record = {{"args": args[:-1]}}
record["script"] = base64.b64decode(args[-1]).decode("utf-16-le")
with open(os.environ["FAKE_PS_RECORD"], "w", encoding="utf-8") as f:
    json.dump(record, f)
sys.stdout.buffer.write(os.environ.get("FAKE_PS_STDOUT", "").encode("utf-8"))
sys.stderr.buffer.write(os.environ.get("FAKE_PS_STDERR", "").encode("utf-8"))
sys.exit(int(os.environ.get("FAKE_PS_EXIT", "0")))
"""


@pytest.fixture()
def fake_powershell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    exe = tmp_path / "powershell.exe"
    exe.write_text(FAKE_POWERSHELL.format(python=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "record.json"
    monkeypatch.setenv("FAKE_PS_RECORD", str(record))
    return exe, record


def test_local_runner_sends_encoded_script_and_reads_utf8(fake_powershell: tuple[Path, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    exe, record = fake_powershell
    path = HOSTILE[9]  # Cyrillic, CJK and an emoji: UTF-16 surrogates on the way in, UTF-8 on the way out
    answer = json.dumps({"ok": True, "result": {"Path": path, "DiskNumber": 4}}, ensure_ascii=False)
    monkeypatch.setenv("FAKE_PS_STDOUT", answer + "\r\n")
    script = hyperv.attach_script(path, read_only=True, no_drive_letter=False)
    result = LocalRunner(str(exe)).run(script)
    assert result == {"Path": path, "DiskNumber": 4}
    sent = json.loads(record.read_text(encoding="utf-8"))
    assert sent["args"] == ["-NoProfile", "-NonInteractive", "-EncodedCommand"]
    assert sent["script"] == LOCAL_PRELUDE + script.text


def test_local_runner_failure_exit_status(fake_powershell: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    exe, _ = fake_powershell
    monkeypatch.setenv("FAKE_PS_STDERR", "The term 'x' is not recognized\r\n")
    monkeypatch.setenv("FAKE_PS_EXIT", "1")
    with pytest.raises(PowerShellError, match=r"^detach failed \(local PowerShell\): The term 'x' is not recognized "
                                              r"\(exit status 1\)$"):
        LocalRunner(str(exe)).run(hyperv.detach_script(disk_number=1))


def test_local_runner_missing_executable(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="not found on PATH"):
        LocalRunner(str(tmp_path / "no-such-powershell")).run(hyperv.list_script())


def test_encoded_command_is_utf16le_base64() -> None:
    argv = LocalRunner(sys.executable).command_line("Get-VHD -Path 'é'")
    assert base64.b64decode(argv[-1]).decode("utf-16-le") == "Get-VHD -Path 'é'"


# --- PsrpRunner, through a stand-in pypsrp ----------------------------------------------------------------
class FakePsrp:
    """Stand-ins for pypsrp.wsman.WSMan, pypsrp.powershell.RunspacePool and PowerShell, with the
    call signatures of pypsrp 0.8/0.9 (WSMan(server, username=, password=, port=, ssl=, auth=,
    cert_validation=); PowerShell(pool).add_script(text); invoke() -> output list; .had_errors;
    .streams.error)."""

    def __init__(self, output: list[Any], errors: list[str] = (), fail: Exception | None = None) -> None:
        self.output, self.errors, self.fail = output, list(errors), fail
        self.calls: list[tuple[str, Any]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = self

        class WSMan:
            def __init__(self, server: str, **kwargs: Any) -> None:
                fake.calls.append(("wsman", (server, kwargs)))
                if fake.fail is not None:
                    raise fake.fail

        class RunspacePool:
            def __init__(self, wsman: WSMan) -> None:
                fake.calls.append(("pool", None))

            def __enter__(self) -> RunspacePool:
                return self

            def __exit__(self, *exc: object) -> None:
                fake.calls.append(("pool closed", None))

        class PowerShell:
            def __init__(self, pool: RunspacePool) -> None:
                self.had_errors = bool(fake.errors)
                self.streams = types.SimpleNamespace(error=fake.errors)

            def add_script(self, text: str) -> PowerShell:
                fake.calls.append(("script", text))
                return self

            def invoke(self) -> list[Any]:
                return fake.output

        package = types.ModuleType("pypsrp")
        wsman_module = types.ModuleType("pypsrp.wsman")
        wsman_module.WSMan = WSMan  # type: ignore[attr-defined]
        ps_module = types.ModuleType("pypsrp.powershell")
        ps_module.RunspacePool = RunspacePool  # type: ignore[attr-defined]
        ps_module.PowerShell = PowerShell  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "pypsrp", package)
        monkeypatch.setitem(sys.modules, "pypsrp.wsman", wsman_module)
        monkeypatch.setitem(sys.modules, "pypsrp.powershell", ps_module)


def test_psrp_runner_connects_and_sends_the_script_unwrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePsrp(['{"ok":true,"result":{"DiskNumber":5}}'])
    fake.install(monkeypatch)
    monkeypatch.setenv(PASSWORD_ENV, "s3cret'$")
    runner = PsrpRunner(PsrpSettings("hv01.corp", user="CORP\\admin", port=5985, ssl=False, auth="ntlm",
                                     cert_validation=False))
    script = hyperv.detach_script(path=P)
    assert runner.run(script) == {"DiskNumber": 5}
    assert fake.calls[0] == ("wsman", ("hv01.corp", {"ssl": False, "auth": "ntlm", "cert_validation": False,
                                                     "username": "CORP\\admin", "password": "s3cret'$", "port": 5985}))
    assert ("script", script.text) in fake.calls  # no local prelude remotely
    assert fake.calls[-1] == ("pool closed", None)


def test_psrp_runner_error_records(monkeypatch: pytest.MonkeyPatch) -> None:
    FakePsrp([], errors=["Cannot bind parameter 'Path'."]).install(monkeypatch)
    runner = PsrpRunner(PsrpSettings("hv01", auth="kerberos"))
    with pytest.raises(PowerShellError, match=r"^list failed \(host hv01\): Cannot bind parameter 'Path'\. "
                                              r"\(exit status 1\)$"):
        runner.run(hyperv.list_script())


def test_psrp_runner_transport_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    FakePsrp([], fail=ConnectionRefusedError("connection refused")).install(monkeypatch)
    with pytest.raises(PowerShellError, match=r"host hv01\): ConnectionRefusedError: connection refused"):
        PsrpRunner(PsrpSettings("hv01", auth="kerberos")).run(hyperv.list_script())


def test_psrp_runner_without_pypsrp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pypsrp", None)
    monkeypatch.setitem(sys.modules, "pypsrp.wsman", None)
    monkeypatch.setitem(sys.modules, "pypsrp.powershell", None)
    with pytest.raises(CommandError, match=r"pip install 'vhdx\[hyperv\]'"):
        PsrpRunner(PsrpSettings("hv01", auth="kerberos")).run(hyperv.list_script())


def test_psrp_password_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "typed"

    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(isatty=lambda: True))
    assert PsrpRunner(PsrpSettings("hv01", user="u"), prompt=prompt).password() == "typed"
    assert asked == ["Password for u on hv01: "]
    assert PsrpRunner(PsrpSettings("hv01", user="u", auth="kerberos"), prompt=prompt).password() is None
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(isatty=lambda: False))
    with pytest.raises(CommandError, match=PASSWORD_ENV):
        PsrpRunner(PsrpSettings("hv01", user="u")).password()


def test_psrp_unknown_auth() -> None:
    with pytest.raises(CommandError, match="unknown WinRM authentication"):
        PsrpRunner(PsrpSettings("hv01", auth="telepathy"))


# --- DryRunRunner and RecordedRunner -----------------------------------------------------------------------
def test_dry_run_shows_exactly_what_would_be_sent() -> None:
    shown: list[str] = []
    script = hyperv.detach_script(path=P)
    local = DryRunRunner(shown.append)
    assert local.run(script) is None
    assert shown == ["# powershell.exe -NoProfile -NonInteractive -EncodedCommand <the script below, UTF-16LE, base64>"
                     f"\n{LOCAL_PRELUDE}{script.text}"]
    assert local.scripts == [LOCAL_PRELUDE + script.text]
    remote = DryRunRunner(shown.append, host="hv01")
    remote.run(script)
    assert shown[-1] == f"# host hv01, over WinRM/PSRP (pypsrp), as one script:\n{script.text}"


def test_recorded_runner_checks_expectations(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"responses": [{"expect": ["Dismount-VHD -DiskNumber 2"], "result": {"x": 1}}]}))
    runner = RecordedRunner.from_file(path)
    with pytest.raises(CommandError, match="expects the script to contain 'Dismount-VHD -DiskNumber 2'"):
        runner.run(hyperv.detach_script(disk_number=3))
    runner = RecordedRunner.from_file(path)
    assert runner.run(hyperv.detach_script(disk_number=2)) == {"x": 1}
    with pytest.raises(CommandError, match="no recorded response left"):
        runner.run(hyperv.detach_script(disk_number=2))


def test_recorded_runner_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("{not json")
    with pytest.raises(CommandError, match="not a recorded-response file"):
        RecordedRunner.from_file(path)
    path.write_text('{"responses": 3}')
    with pytest.raises(CommandError, match="no \"responses\" list"):
        RecordedRunner.from_file(path)

