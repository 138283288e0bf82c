"""What every operation returns: a dataclass of plain values with ``as_dict()``.

House convention (issue 4): an operation reports what it did with these field names wherever they
apply, so scripts can read any operation's ``--json`` output the same way:

    bytes_read, bytes_written      payload bytes moved (not metadata)
    blocks_allocated, blocks_freed payload blocks the output gained or gave up
    file_size_before               length of the input file(s) (None when unknown, e.g. a pipe)
    file_size_after                length of the output file (None for a stream)
    seconds                        wall time of the operation

``as_dict()`` keeps the Python (snake_case) names; the CLI renders them in kebab-case, as it does
for every JSON document it prints.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any


@dataclasses.dataclass(frozen=True)
class OperationResult:
    """Base of the result dataclasses of ``vhdx.ops``."""

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the fields (paths as strings, nested results as dicts)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, OperationResult):
        return value.as_dict()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


__all__ = ["OperationResult"]
