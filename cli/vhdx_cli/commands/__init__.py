"""One module per ``vhdx`` sub-command.

A module named ``foo_bar.py`` that defines a click command called ``command`` becomes
``vhdx foo-bar`` without any registration (``vhdx_cli.main`` discovers the modules and imports
each one only when its command is run or listed). Modules whose names start with ``_`` are
helpers, not commands.
"""

from __future__ import annotations
