"""The ``vhdx`` click group, command discovery, and the one place where exceptions become exit codes.

Exit status:
    0    success
    1    the image could not be read (any ``vhdx.VhdxError``), an operating-system error
         (``OSError``: missing file, permission, ...), or a request that does not fit the image
         (``CommandError``); reported as one line ``vhdx: <message>`` on stderr, never a traceback
    2    command-line usage error (click's own convention), or a command-specific "not OK"
         answer documented in that command's help (``vhdx chain`` with a broken chain)
    130  interrupted (Ctrl-C), as a shell reports a process killed by SIGINT
    141  stdout was closed early by the reader (``vhdx cat disk.vhdx | head``), as a shell
         reports a process killed by SIGPIPE; nothing is printed
"""

from __future__ import annotations

import importlib
import io
import os
import pkgutil
import sys
from typing import Any, NoReturn

import click

import vhdx

from . import commands as commands_package
from .errors import CommandError

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE

_HELP_EPILOG = """\b
Examples:
  vhdx info disk.vhdx
  vhdx info --json child.avhdx --parent-search /vms/base
  vhdx cat disk.vhdx > disk.raw
  vhdx map --json disk.vhdx
  vhdx chain child.avhdx
  vhdx info --json https://example.org/vms/disk.vhdx    # read-only commands take fsspec URLs
  vhdx batch hash '/vms/**/*.vhdx' --output hashes.jsonl --workers 4

Read-only commands (info, cat, map, chain, check, hash, partitions, extract, convert's source)
accept URLs (s3://, gs://, az://, http(s)://, file://, memory://) when the 'remote' extra is
installed (pip install 'vhdx[remote]'; s3fs, gcsfs or adlfs for s3://, gs://, az://).

Run 'vhdx COMMAND --help' for the options and examples of each command.
"""


class VhdxGroup(click.Group):
    """A group whose commands are the modules of ``vhdx_cli.commands``, loaded on demand, and
    which maps every expected failure of a command to an exit status (see the module docstring)."""

    def _module_names(self) -> list[str]:
        return sorted(
            info.name for info in pkgutil.iter_modules(commands_package.__path__) if not info.name.startswith("_")
        )

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name.replace("_", "-") for name in self._module_names()]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = cmd_name.replace("-", "_")
        if module_name not in self._module_names():
            return None
        module = importlib.import_module(f"{commands_package.__name__}.{module_name}")
        command: click.Command = module.command
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            # Flush here, not at interpreter exit, so a closed pipe is seen while we can still
            # handle it quietly.
            sys.stdout.flush()
            return result
        except BrokenPipeError:
            _silence_stdout()
            raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None
        except KeyboardInterrupt:
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except CommandError as err:
            _fail(str(err), err.exit_code)
        except vhdx.VhdxError as err:
            # str() of a VhdxError already names the image, the structure and the offset.
            _fail(str(err), EXIT_ERROR)
        except OSError as err:
            _fail(_describe_os_error(err), EXIT_ERROR)


def _fail(message: str, exit_code: int) -> NoReturn:
    one_line = " ".join(message.split())  # scripts read the first line of stderr
    click.echo(f"vhdx: {one_line}", err=True)
    raise click.exceptions.Exit(exit_code)


def _describe_os_error(err: OSError) -> str:
    """``path: reason`` (the form cat and ls use) rather than Python's ``[Errno 2] ...: 'path'``."""
    if err.strerror:
        names = [os.fsdecode(n) for n in (err.filename, err.filename2) if n is not None]
        return ": ".join([*names, err.strerror]) if names else err.strerror
    return str(err) or type(err).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of the closed pipe does not
    print 'Exception ignored ... BrokenPipeError' (the recipe in Python's signal documentation)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):
        pass  # stdout is not a real file (e.g. under click's CliRunner); nothing will be flushed to it


@click.group(
    cls=VhdxGroup,
    name="vhdx",
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_HELP_EPILOG,
)
@click.version_option(vhdx.__version__, "-V", "--version", prog_name="vhdx", message="%(prog)s %(version)s")
def cli() -> None:
    """Inspect Hyper-V VHDX virtual disks (and their differencing chains)."""


def main() -> None:
    """Console-script entry point (``vhdx``)."""
    cli(prog_name="vhdx")


if __name__ == "__main__":
    main()
