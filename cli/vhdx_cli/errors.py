"""The CLI's own error: a problem with what the user asked for, found after argument parsing
(for example an offset past the end of the image). ``vhdx_cli.main`` turns it into one
``vhdx: <message>`` line on stderr and its exit status."""

from __future__ import annotations


class CommandError(Exception):
    """A request that cannot be carried out; reported as ``vhdx: <message>``.

    Attributes:
        exit_code: the process exit status to use (1 unless the command says otherwise).
    """

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
