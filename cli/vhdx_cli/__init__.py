"""vhdx_cli: the ``vhdx`` command-line front end over the ``vhdx`` library.

The package holds no format logic: each command in ``vhdx_cli.commands`` parses its arguments,
calls the public library API and renders the result through ``vhdx_cli.output``. Exit codes are
decided in one place, ``vhdx_cli.main``.
"""

from __future__ import annotations
