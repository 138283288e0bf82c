"""File type identifier at offset 0 (MS-VHDX 2.2.1)."""

from __future__ import annotations

from construct import Const, Padded, PaddedString, Struct

from ..constants import CREATOR_SIZE, FILE_IDENTIFIER_SIGNATURE, FILE_IDENTIFIER_SIZE

FILE_IDENTIFIER_FIELDS = Struct(
    "signature" / Const(FILE_IDENTIFIER_SIGNATURE),
    # UTF-16LE, optionally NUL-terminated; for diagnostics only.
    "creator" / PaddedString(CREATOR_SIZE, "utf_16_le"),
)
FILE_IDENTIFIER = Padded(FILE_IDENTIFIER_SIZE, FILE_IDENTIFIER_FIELDS)
