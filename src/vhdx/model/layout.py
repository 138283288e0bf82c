"""Where the objects of a new file go: the Windows layout (VHDX-FORMAT.md 1.3, 11).

Header section at 0, the log at 1 MiB, the metadata region after the log, the BAT after the
metadata, the first payload block after the BAT. Pure arithmetic, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._units import align_up
from ..constants import HEADER_SECTION_SIZE, METADATA_REGION_SIZE, OBJECT_ALIGNMENT
from .geometry import DiskGeometry


@dataclass(frozen=True, slots=True)
class FileLayout:
    log_offset: int
    log_length: int
    metadata_offset: int
    metadata_length: int
    bat_offset: int
    bat_length: int
    first_block_offset: int

    @property
    def structures_end(self) -> int:
        return self.first_block_offset


def plan_layout(geometry: DiskGeometry, log_length: int) -> FileLayout:
    """Place the log, metadata region and BAT of a new file with ``geometry``."""
    if log_length <= 0 or log_length % OBJECT_ALIGNMENT:
        raise ValueError(f"log size {log_length} is not a positive multiple of 1 MiB")
    log_offset = HEADER_SECTION_SIZE
    metadata_offset = log_offset + log_length
    bat_offset = metadata_offset + METADATA_REGION_SIZE
    bat_length = geometry.bat_region_length
    first_block = align_up(bat_offset + bat_length, OBJECT_ALIGNMENT)
    return FileLayout(log_offset, log_length, metadata_offset, METADATA_REGION_SIZE, bat_offset, bat_length, first_block)
