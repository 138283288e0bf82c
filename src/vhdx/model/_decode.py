"""The one place where construct's exceptions become FormatError subclasses."""

from __future__ import annotations

from typing import Any

from construct import ConstError, ConstructError, Construct, StreamError

from ..errors import CorruptStructureError, SignatureError, TruncatedError


def parse_struct(con: Construct, data: bytes | bytearray | memoryview, *, structure: str, offset: int) -> Any:
    """Parse ``data`` with ``con``; raise a FormatError naming ``structure`` and ``offset`` on failure.

    Raises:
        SignatureError: a Const (signature) field does not match.
        TruncatedError: the data ends inside the structure.
        CorruptStructureError: any other parse failure.
    """
    try:
        return con.parse(bytes(data))
    except ConstError as err:
        raise SignatureError(f"bad signature ({err.path})", structure=structure, offset=offset) from err
    except StreamError as err:
        raise TruncatedError("structure is truncated", structure=structure, offset=offset) from err
    except (ConstructError, UnicodeDecodeError) as err:
        raise CorruptStructureError(f"cannot decode ({err})", structure=structure, offset=offset) from err


def build_struct(con: Construct, value: Any) -> bytes:
    """Build ``value`` with ``con`` (programming errors surface as ConstructError)."""
    return bytes(con.build(value))
