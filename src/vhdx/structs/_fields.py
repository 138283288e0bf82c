"""Field types shared by the structure declarations."""

from __future__ import annotations

import uuid
from typing import Any

from construct import Adapter, Bytes, Construct, Struct


class _GuidAdapter(Adapter):  # type: ignore[misc]
    """A GUID in the Microsoft mixed-endian layout (VHDX-FORMAT.md section 0) <-> uuid.UUID."""

    def _decode(self, obj: bytes, context: Any, path: Any) -> uuid.UUID:
        return uuid.UUID(bytes_le=bytes(obj))

    def _encode(self, obj: uuid.UUID, context: Any, path: Any) -> bytes:
        return obj.bytes_le


Guid = _GuidAdapter(Bytes(16))


def field_offset(struct: Struct, name: str) -> int:
    """Return the byte offset of field ``name`` within a fixed-size construct ``Struct``."""
    offset = 0
    for sub in struct.subcons:
        if sub.name == name:
            return offset
        offset += sub.sizeof()
    raise KeyError(name)


def sizeof(con: Construct) -> int:
    """Return the fixed size of a construct."""
    return int(con.sizeof())
