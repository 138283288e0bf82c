"""The exception hierarchy: everything this package raises on purpose derives from VhdxError.

Caller mistakes are plain ValueError/TypeError, I/O on a closed disk is ValueError (as in io), and
OSError from the operating system passes through unwrapped. Messages name the image, the structure
and the file offset (in hex) where one applies.
"""

from __future__ import annotations

import io
import os


class VhdxError(Exception):
    """Base of every error raised on purpose by this package.

    Attributes:
        image: the file the error is about (a path or a descriptive name), when known.
        structure: the on-disk structure concerned (``"header 1"``, ``"BAT"``, ...), when known.
        offset: the absolute file offset of that structure or field, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        image: str | os.PathLike[str] | None = None,
        structure: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.message = message
        self.image = os.fspath(image) if image is not None else None
        self.structure = structure
        self.offset = offset
        super().__init__(message)

    def with_image(self, image: str | os.PathLike[str] | None) -> VhdxError:
        """Return self after recording ``image`` if no image was recorded yet."""
        if self.image is None and image is not None:
            self.image = os.fspath(image)
        return self

    def __str__(self) -> str:
        where = []
        if self.structure:
            where.append(self.structure)
        if self.offset is not None:
            where.append(f"at 0x{self.offset:x}")
        text = self.message
        if where:
            text = f"{' '.join(where)}: {text}"
        if self.image:
            text = f"{self.image}: {text}"
        return text


class FormatError(VhdxError):
    """The bytes break MS-VHDX."""


class SignatureError(FormatError):
    """A structure does not start with its signature."""


class ChecksumError(FormatError):
    """A CRC-32C checksum does not match."""


class TruncatedError(FormatError):
    """The file ends inside (or before) a structure that must exist."""


class CorruptStructureError(FormatError):
    """A field is out of range, structures overlap, a BAT state is invalid, and so on."""


class LogReplayError(FormatError):
    """The log holds an active sequence that cannot be replayed."""


class RepairNeededError(CorruptStructureError):
    """A read-write open found damage that reads tolerate but writes could make worse (a damaged
    region table copy, ...): writing is refused until the image is repaired (``vhdx check
    --repair``) or the open passes ``allow_damaged=True``."""


class UnsupportedError(VhdxError):
    """A valid file uses something this implementation does not support (for example an
    unknown region or metadata item marked required)."""


class ParentError(VhdxError):
    """Something is wrong with a differencing disk's parent."""


class ParentNotFoundError(ParentError):
    """No parent file could be found from the parent locator and the search folders."""


class ParentMismatchError(ParentError):
    """The parent's DataWriteGuid differs from the child's parent_linkage (or sizes differ)."""


class ParentChainError(ParentError):
    """The chain of parents loops back on itself or is absurdly deep."""


class ReadOnlyError(VhdxError, io.UnsupportedOperation):
    """A write was attempted on a disk opened read-only."""


__all__ = [
    "ChecksumError",
    "CorruptStructureError",
    "FormatError",
    "LogReplayError",
    "ParentChainError",
    "ParentError",
    "ParentMismatchError",
    "ParentNotFoundError",
    "ReadOnlyError",
    "RepairNeededError",
    "SignatureError",
    "TruncatedError",
    "UnsupportedError",
    "VhdxError",
]
