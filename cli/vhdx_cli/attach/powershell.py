"""PowerShell for the Hyper-V backend: quoting, the script envelope, and the runners that execute
a script locally, on a remote host, not at all (dry run) or from recorded answers (tests).

Quoting. Every value that comes from the user (paths, VM names) enters a script only as a
single-quoted literal built by ``quote``: inside single quotes PowerShell expands nothing (no
``$variables``, no ``$(subexpressions)``, no backtick escapes), and the only special characters
are the single-quote characters themselves, which are written twice. PowerShell's tokenizer
treats FIVE characters as single quotes: the ASCII apostrophe and U+2018, U+2019, U+201A,
U+201B (PowerShell ``CharTraits.IsSingleQuote``); all five are doubled. User text is never put
inside a double-quoted string, and numbers are written only after ``int()`` accepted them.

The envelope. A script body assigns ``$result``; ``envelope`` wraps it so that every error
becomes terminating (``$ErrorActionPreference = 'Stop'``), is caught, and the outcome is printed
as ONE line of compressed JSON: ``{"ok":true,"result":...}`` or ``{"ok":false,"error":{"message":
...,"id":...,"category":...}}``. The runners return that line's ``result`` or raise
``PowerShellError`` with PowerShell's own message. Enum values are converted to strings in the
scripts (``ConvertTo-Json`` would print their numbers).

Runners:
    ``LocalRunner``     powershell.exe (or pwsh) -NoProfile -NonInteractive -EncodedCommand; the
                        script travels base64-encoded (UTF-16LE) because a script on the command
                        line would be re-split by Windows' argument quoting rules.
    ``PsrpRunner``      a remote host over WinRM/PSRP with pypsrp (optional: ``pip install
                        'vhdx[hyperv]'``).
    ``DryRunRunner``    runs nothing: hands each script, exactly as it would be sent, to a callback.
    ``RecordedRunner``  replays answers recorded in a JSON file (tests; see its docstring).
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CommandError

# PowerShell's single-quote characters (CharTraits.IsSingleQuote): ' and the curly/low-9 variants.
SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
# Nesting of the deepest document (envelope > result > list > item > partitions > partition >
# access paths): deeper levels would be turned into type-name strings by ConvertTo-Json.
JSON_DEPTH = 6
# The one line of output the envelope prints starts with this.
ENVELOPE_PREFIX = '{"ok":'
# Sent before the script by LocalRunner only: makes powershell.exe write UTF-8 (no BOM) to the
# pipe instead of the console's OEM code page, so non-ASCII paths come back intact.
LOCAL_PRELUDE = "[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false\n"
PASSWORD_ENV = "VHDX_HYPERV_PASSWORD"
PSRP_AUTH = ("negotiate", "ntlm", "kerberos", "credssp", "basic", "certificate")
_NO_PASSWORD_AUTH = ("kerberos", "certificate")
_HYPERV_MODULE_HINT = ("is the Hyper-V PowerShell module installed? (Enable-WindowsOptionalFeature -Online "
                       "-FeatureName Microsoft-Hyper-V-Management-PowerShell)")


class PowerShellError(CommandError):
    """PowerShell reported an error (or could not be run); the message is PowerShell's own.

    Attributes:
        operation: what was being done (``"attach"``, ``"detach"``, ...).
        where: ``"local PowerShell"`` or ``"host NAME"``.
        error_id: PowerShell's FullyQualifiedErrorId, when it gave one.
        category: PowerShell's error category (``ObjectNotFound``, ``PermissionDenied``, ...).
    """

    def __init__(self, message: str, *, operation: str = "", where: str = "", error_id: str | None = None,
                 category: str | None = None) -> None:
        prefix = f"{operation} failed" if operation else "PowerShell failed"
        if where:
            prefix += f" ({where})"
        super().__init__(f"{prefix}: {message}")
        self.operation = operation
        self.where = where
        self.error_id = error_id
        self.category = category
        self.powershell_message = message


# --- quoting -------------------------------------------------------------------------------------
def quote(value: str) -> str:
    """``value`` as a PowerShell single-quoted string literal (nothing inside is expanded).

    Raises:
        ValueError: ``value`` holds a NUL character (no Windows path or name can).
    """
    if "\x00" in value:
        raise ValueError("a NUL character cannot be passed to PowerShell")
    return "'" + "".join(c + c if c in SINGLE_QUOTES else c for c in value) + "'"


def literal(value: str | int | bool | None) -> str:
    """A PowerShell literal for a Python value: ``'text'``, ``42``, ``$true``, ``$null``."""
    if value is None:
        return "$null"
    if isinstance(value, bool):
        return "$true" if value else "$false"
    if isinstance(value, int):
        return str(int(value))
    return quote(value)


# --- scripts -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Script:
    """One PowerShell script for one operation.

    Attributes:
        operation: short name used in messages (``"attach"``).
        body: statements that assign ``$result`` (the envelope adds error handling and output).
    """

    operation: str
    body: str

    @property
    def text(self) -> str:
        return envelope(self.body)


def envelope(body: str) -> str:
    """The full script: ``body`` inside try/catch, the outcome printed as one compressed JSON line.

    The body is inserted as it is, not indented: a quoted literal may span lines (a path with a
    newline), and indenting would change it."""
    inner = body.strip("\n")
    return (
        "$ErrorActionPreference = 'Stop'\n"
        "$ProgressPreference = 'SilentlyContinue'\n"
        "try {\n"
        f"{inner}\n"
        "    $vhdxOut = [ordered]@{ ok = $true; result = $result }\n"
        "} catch {\n"
        "    $vhdxOut = [ordered]@{ ok = $false; error = [ordered]@{\n"
        "        message = $_.Exception.Message\n"
        "        id = $_.FullyQualifiedErrorId\n"
        "        category = [string]$_.CategoryInfo.Category\n"
        "    } }\n"
        "}\n"
        f"ConvertTo-Json -InputObject $vhdxOut -Depth {JSON_DEPTH} -Compress\n"
    )


# --- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RawResult:
    """What a runner got back before parsing.

    Attributes:
        stdout: the text output (the envelope's JSON line, possibly after warnings).
        stderr: the error text of a local process.
        exit_code: a local process's exit status (0 for remote runs without errors).
        error_records: messages of PowerShell error records (remote runs).
    """

    stdout: str
    stderr: str = ""
    exit_code: int = 0
    error_records: tuple[str, ...] = ()


def parse_output(raw: RawResult, operation: str, where: str) -> Any:
    """The ``result`` of the envelope in ``raw``, or ``PowerShellError`` with PowerShell's message."""
    document = _find_envelope(raw.stdout)
    if document is None:
        details = list(raw.error_records) or _stderr_lines(raw.stderr)
        message = "; ".join(details) if details else "no output"
        if raw.exit_code:
            message += f" (exit status {raw.exit_code})"
        raise PowerShellError(message, operation=operation, where=where)
    if document.get("ok") is True:
        return document.get("result")
    error = document.get("error") or {}
    message = str(error.get("message") or "unknown error").strip()
    error_id = error.get("id")
    if isinstance(error_id, str) and error_id.startswith("CommandNotFoundException"):
        message += f" ({_HYPERV_MODULE_HINT})"
    raise PowerShellError(message, operation=operation, where=where, error_id=error_id,
                          category=error.get("category"))


def _find_envelope(stdout: str) -> dict[str, Any] | None:
    # Warnings and host output may precede it; the envelope is the last line that starts right.
    for line in reversed(stdout.splitlines()):
        line = line.strip().lstrip("\ufeff")
        if line.startswith(ENVELOPE_PREFIX):
            try:
                document = json.loads(line)
            except json.JSONDecodeError:
                return None
            return document if isinstance(document, dict) else None
    return None


_CLIXML_STRING = re.compile(r'<S S="Error">(.*?)</S>', re.DOTALL)
_CLIXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _stderr_lines(stderr: str) -> list[str]:
    """Readable lines of a local powershell.exe's stderr (plain text, or CLIXML when the parent
    process is itself PowerShell)."""
    text = stderr.strip()
    if text.startswith("#< CLIXML"):
        parts = [_CLIXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), s) for s in _CLIXML_STRING.findall(text)]
        text = "".join(parts)
        for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&")):
            text = text.replace(entity, char)
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- runners -------------------------------------------------------------------------------------
class Runner:
    """Runs ``Script`` objects; subclasses implement ``execute`` (and ``prepare`` when they send
    more than the script)."""

    where = "PowerShell"
    dry_run = False

    def prepare(self, script: Script) -> str:
        """The exact text sent to PowerShell."""
        return script.text

    def execute(self, text: str, script: Script) -> RawResult:
        raise NotImplementedError

    def run(self, script: Script) -> Any:
        """Run ``script``; return its parsed ``$result`` (None for a dry run)."""
        return parse_output(self.execute(self.prepare(script), script), script.operation, self.where)


def find_powershell(preferred: str | None = None) -> str | None:
    """The PowerShell executable: ``preferred`` if given (a name on PATH or a path), else
    powershell.exe (Windows PowerShell, where the Hyper-V module lives), else pwsh."""
    candidates = [preferred] if preferred else ["powershell.exe", "powershell", "pwsh.exe", "pwsh"]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


class LocalRunner(Runner):
    """PowerShell on this machine: ``EXE -NoProfile -NonInteractive -EncodedCommand BASE64``."""

    where = "local PowerShell"

    def __init__(self, executable: str | None = None, *, timeout: float | None = None) -> None:
        self.requested = executable
        self.timeout = timeout

    def prepare(self, script: Script) -> str:
        return LOCAL_PRELUDE + script.text

    def command_line(self, text: str) -> list[str]:
        executable = find_powershell(self.requested)
        if executable is None:
            wanted = self.requested or "powershell.exe or pwsh"
            raise CommandError(f"{wanted} not found on PATH (the hyperv backend runs PowerShell; use --host to "
                               "drive a remote Hyper-V host)")
        encoded = base64.b64encode(text.encode("utf-16-le")).decode("ascii")
        return [executable, "-NoProfile", "-NonInteractive", "-EncodedCommand", encoded]

    def execute(self, text: str, script: Script) -> RawResult:
        argv = self.command_line(text)
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise PowerShellError(f"no answer within {self.timeout:g} seconds", operation=script.operation,
                                  where=self.where) from None
        return RawResult(stdout=done.stdout.decode("utf-8-sig", errors="replace"),
                         stderr=done.stderr.decode("utf-8", errors="replace"), exit_code=done.returncode)


@dataclass
class PsrpSettings:
    """How to reach a remote host (pypsrp's WSMan arguments).

    Attributes:
        host: name or address of the Hyper-V host.
        user: account (``DOMAIN\\user`` or ``user@REALM``); None for Kerberos with a ticket.
        password: the password, or None to take it from VHDX_HYPERV_PASSWORD or a prompt.
        port: None for pypsrp's default (5986 with SSL, 5985 without).
        ssl: HTTPS (default) or HTTP (then WinRM encrypts the payload itself with NTLM/Kerberos).
        auth: one of ``PSRP_AUTH``.
        cert_validation: check the host's TLS certificate.
    """

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    ssl: bool = True
    auth: str = "negotiate"
    cert_validation: bool = True


class PsrpRunner(Runner):
    """A remote host over WinRM/PSRP (pypsrp): one runspace pool per script."""

    def __init__(self, settings: PsrpSettings, *, prompt: Callable[[str], str] | None = None) -> None:
        if settings.auth not in PSRP_AUTH:
            raise CommandError(f"unknown WinRM authentication {settings.auth!r} (one of {', '.join(PSRP_AUTH)})")
        self.settings = settings
        self.where = f"host {settings.host}"
        self._prompt = prompt if prompt is not None else getpass.getpass

    @staticmethod
    def import_pypsrp() -> tuple[Any, Any, Any]:
        """(WSMan, RunspacePool, PowerShell) from pypsrp, or a CommandError saying how to get it."""
        try:
            from pypsrp.powershell import PowerShell, RunspacePool
            from pypsrp.wsman import WSMan
        except ImportError as err:
            raise CommandError("a remote Hyper-V host is reached with pypsrp, which is not installed: "
                               f"pip install 'vhdx[hyperv]' ({err})") from None
        return WSMan, RunspacePool, PowerShell

    def password(self) -> str | None:
        s = self.settings
        if s.password is not None:
            return s.password
        if s.user is None or s.auth in _NO_PASSWORD_AUTH:
            return None
        from_env = os.environ.get(PASSWORD_ENV)
        if from_env is not None:
            s.password = from_env
        elif sys.stdin is not None and sys.stdin.isatty():
            s.password = self._prompt(f"Password for {s.user} on {s.host}: ")
        else:
            raise CommandError(f"no password for {s.user} on {s.host}: set {PASSWORD_ENV} (stdin is not a terminal)")
        return s.password

    def execute(self, text: str, script: Script) -> RawResult:
        wsman_class, pool_class, powershell_class = self.import_pypsrp()
        s = self.settings
        kwargs: dict[str, Any] = {"ssl": s.ssl, "auth": s.auth, "cert_validation": s.cert_validation}
        if s.user is not None:
            kwargs["username"] = s.user
        password = self.password()
        if password is not None:
            kwargs["password"] = password
        if s.port is not None:
            kwargs["port"] = s.port
        try:
            wsman = wsman_class(s.host, **kwargs)
            with pool_class(wsman) as pool:
                ps = powershell_class(pool)
                ps.add_script(text)
                output = ps.invoke()
                records = tuple(str(record) for record in ps.streams.error)
                had_errors = bool(ps.had_errors)
        except CommandError:
            raise
        except Exception as err:  # pypsrp, requests and spnego each raise their own types
            raise PowerShellError(f"{type(err).__name__}: {err}", operation=script.operation, where=self.where) from None
        return RawResult(stdout="\n".join(str(item) for item in output), exit_code=1 if had_errors else 0,
                         error_records=records)


class DryRunRunner(Runner):
    """Runs nothing: hands each script, exactly as the real runner would send it, to ``echo``
    (with a comment line saying how it would be sent) and keeps it in ``scripts``."""

    dry_run = True

    def __init__(self, echo: Callable[[str], None] | None = None, *, host: str | None = None,
                 executable: str | None = None) -> None:
        self.echo = echo
        self.host = host
        self.executable = executable
        self.scripts: list[str] = []
        self.where = f"host {host}" if host else "local PowerShell"

    def prepare(self, script: Script) -> str:
        return script.text if self.host else LOCAL_PRELUDE + script.text

    def header(self) -> str:
        if self.host:
            return f"# {self.where}, over WinRM/PSRP (pypsrp), as one script:"
        exe = self.executable or "powershell.exe"
        return f"# {exe} -NoProfile -NonInteractive -EncodedCommand <the script below, UTF-16LE, base64>"

    def run(self, script: Script) -> Any:
        text = self.prepare(script)
        self.scripts.append(text)
        if self.echo is not None:
            self.echo(f"{self.header()}\n{text}")
        return None


@dataclass
class RecordedRunner(Runner):
    """Replays recorded answers, in order, instead of running PowerShell (for tests).

    The file is JSON: ``{"note": "where the answers come from", "responses": [RESPONSE, ...]}``; each RESPONSE
    has ``expect`` (strings the script must contain, checked before answering) and either
    ``stdout`` (the raw text PowerShell printed, e.g. the envelope's JSON line) or the shorthands
    ``result`` (a value, sent as ``{"ok":true,"result":VALUE}``) or ``error`` (an object with
    message/id/category, sent as ``{"ok":false,...}``); optional ``stderr``, ``exit_code`` and
    ``error_records``. The scripts received are kept in ``scripts``.
    """

    responses: list[dict[str, Any]]
    where: str = "recorded"  # type: ignore[misc]
    source: str = "<recorded>"
    scripts: list[str] = field(default_factory=list)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> RecordedRunner:
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise CommandError(f"{os.fspath(path)}: not a recorded-response file: {err}") from None
        responses = document.get("responses") if isinstance(document, dict) else None
        if not isinstance(responses, list):
            raise CommandError(f"{os.fspath(path)}: not a recorded-response file (no \"responses\" list)")
        return cls(responses, where=f"recorded: {Path(path).name}", source=os.fspath(path))

    def execute(self, text: str, script: Script) -> RawResult:
        index = len(self.scripts)
        self.scripts.append(text)
        if index >= len(self.responses):
            raise CommandError(f"{self.source}: no recorded response left for script {index + 1} ({script.operation})")
        response = self.responses[index]
        for expected in response.get("expect", ()):
            if expected not in text:
                raise CommandError(f"{self.source}: response {index + 1} expects the script to contain {expected!r}; "
                                   f"the {script.operation} script does not")
        stdout = response.get("stdout")
        if stdout is None:
            if "error" in response:
                document: dict[str, Any] = {"ok": False, "error": response["error"]}
            else:
                document = {"ok": True, "result": response.get("result")}
            stdout = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        return RawResult(stdout=stdout, stderr=response.get("stderr", ""), exit_code=int(response.get("exit_code", 0)),
                         error_records=tuple(response.get("error_records", ())))

    def unused(self) -> Sequence[dict[str, Any]]:
        """Responses not consumed yet."""
        return self.responses[len(self.scripts):]
