"""vhdx: read, write, check and transform Hyper-V VHDX virtual disks in pure Python.

    >>> import vhdx
    >>> with vhdx.open("disk.vhdx") as disk:          # doctest: +SKIP
    ...     mbr = disk.read(512)
"""

from __future__ import annotations

from .create import create
from .disk import DiskType, VirtualDisk, open
from .engine.mapping import Extent
from .engine.source import RemoteOptions
from .errors import (
    ChecksumError,
    CorruptStructureError,
    FormatError,
    LogReplayError,
    ParentChainError,
    ParentError,
    ParentMismatchError,
    ParentNotFoundError,
    ReadOnlyError,
    RepairNeededError,
    SignatureError,
    TruncatedError,
    UnsupportedError,
    VhdxError,
)
from .info import DiskInfo

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "CorruptStructureError",
    "DiskInfo",
    "DiskType",
    "Extent",
    "FormatError",
    "LogReplayError",
    "ParentChainError",
    "ParentError",
    "ParentMismatchError",
    "ParentNotFoundError",
    "ReadOnlyError",
    "RemoteOptions",
    "RepairNeededError",
    "SignatureError",
    "TruncatedError",
    "UnsupportedError",
    "VhdxError",
    "VirtualDisk",
    "create",
    "open",
]
