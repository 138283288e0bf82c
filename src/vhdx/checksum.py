"""CRC-32C (Castagnoli) as VHDX uses it: the only module that imports the CRC package.

References: MS-VHDX 2.2.2 (headers), 2.2.3 (region table), 2.3.1.1 (log entries);
VHDX-FORMAT.md section 2.
"""

from __future__ import annotations

import struct

import crc32c as _crc32c

_CHECKSUM = struct.Struct("<I")
_ZERO = b"\0\0\0\0"


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """Return the CRC-32C of ``data``, continuing from ``value``."""
    return _crc32c.crc32c(data, value)


def compute(buf: bytes | bytearray | memoryview, offset: int) -> int:
    """Return the checksum of ``buf`` computed as if its 4 bytes at ``offset`` were zero."""
    view = memoryview(buf)
    value = _crc32c.crc32c(view[:offset])
    value = _crc32c.crc32c(_ZERO, value)
    return _crc32c.crc32c(view[offset + 4 :], value)


def stored(buf: bytes | bytearray | memoryview, offset: int) -> int:
    """Return the checksum value stored at ``offset``."""
    return _CHECKSUM.unpack_from(buf, offset)[0]


def verify(buf: bytes | bytearray | memoryview, offset: int) -> bool:
    """Return True if the checksum stored at ``offset`` matches the contents (``buf`` is not modified)."""
    return stored(buf, offset) == compute(buf, offset)


def seal(buf: bytearray, offset: int) -> int:
    """Compute the checksum of ``buf`` with its checksum field zeroed, store it, and return it."""
    buf[offset : offset + 4] = _ZERO
    value = _crc32c.crc32c(buf)
    _CHECKSUM.pack_into(buf, offset, value)
    return value
