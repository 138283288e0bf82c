"""DiskGeometry: the only place that converts between virtual offsets, sectors, blocks, chunks,
BAT indices and sector bitmap bits.

References: MS-VHDX 2.4 (blocks, chunks), 2.5 (BAT layout); VHDX-FORMAT.md 8.4-8.6, 9.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .._units import ceil_div, is_power_of_two
from ..constants import (
    BAT_ENTRY_SIZE,
    MAX_BLOCK_SIZE,
    MAX_VIRTUAL_DISK_SIZE,
    MIN_BLOCK_SIZE,
    OBJECT_ALIGNMENT,
    SECTOR_SIZES,
    SECTORS_PER_CHUNK,
)
from ..errors import CorruptStructureError


@dataclass(frozen=True, slots=True)
class DiskGeometry:
    """Sizes of one VHDX file and all index arithmetic derived from them.

    ``virtual_size`` may be any multiple of the logical sector size up to 64 TiB (0 is allowed
    for an empty disk); ``block_size`` a power of two from 1 to 256 MiB.
    """

    virtual_size: int
    block_size: int
    logical_sector_size: int

    def __post_init__(self) -> None:
        if self.logical_sector_size not in SECTOR_SIZES:
            raise CorruptStructureError(f"logical sector size {self.logical_sector_size} is not 512 or 4096")
        if not (is_power_of_two(self.block_size) and MIN_BLOCK_SIZE <= self.block_size <= MAX_BLOCK_SIZE):
            raise CorruptStructureError(f"block size {self.block_size} is not a power of two from 1 MiB to 256 MiB")
        if not 0 <= self.virtual_size <= MAX_VIRTUAL_DISK_SIZE:
            raise CorruptStructureError(f"virtual disk size {self.virtual_size} is over the 64 TiB limit")
        if self.virtual_size % self.logical_sector_size:
            raise CorruptStructureError(
                f"virtual disk size {self.virtual_size} is not a multiple of the logical sector size"
            )

    # --- derived sizes (VHDX-FORMAT.md 8.4) -------------------------------------------------
    @property
    def block_shift(self) -> int:
        return self.block_size.bit_length() - 1

    @property
    def chunk_size(self) -> int:
        """Virtual bytes covered by one sector bitmap block."""
        return SECTORS_PER_CHUNK * self.logical_sector_size

    @property
    def chunk_ratio(self) -> int:
        """Payload blocks per chunk (per sector bitmap block)."""
        return self.chunk_size // self.block_size

    @property
    def sectors_per_block(self) -> int:
        return self.block_size // self.logical_sector_size

    @property
    def payload_block_count(self) -> int:
        return ceil_div(self.virtual_size, self.block_size)

    @property
    def sector_bitmap_block_count(self) -> int:
        return ceil_div(self.payload_block_count, self.chunk_ratio)

    @property
    def bat_entry_count(self) -> int:
        """Entries up to the last payload entry: formula A for dynamic/fixed files (8.5).

        This is what a reader requires to be present; a sector bitmap entry of the last chunk
        may lie beyond it (and then reads as NOT_PRESENT).
        """
        pb = self.payload_block_count
        if pb == 0:
            return 0
        return pb + (pb - 1) // self.chunk_ratio

    @property
    def bat_entry_count_full(self) -> int:
        """Entries including the last chunk's sector bitmap entry at its uniform index.

        Writers size the BAT region for this many entries, which satisfies both formulas of 8.5.
        """
        return self.sector_bitmap_block_count * (self.chunk_ratio + 1)

    @property
    def bat_region_length(self) -> int:
        """BAT region length a writer allocates: full entry count, rounded up to 1 MiB."""
        return max(OBJECT_ALIGNMENT, ceil_div(self.bat_entry_count_full * BAT_ENTRY_SIZE, OBJECT_ALIGNMENT) * OBJECT_ALIGNMENT)

    # --- index math (VHDX-FORMAT.md 8.4, 9) --------------------------------------------------
    def block_of(self, virtual_offset: int) -> int:
        return virtual_offset >> self.block_shift

    def chunk_of_block(self, block_index: int) -> int:
        return block_index // self.chunk_ratio

    def payload_bat_index(self, block_index: int) -> int:
        return block_index + block_index // self.chunk_ratio

    def bitmap_bat_index(self, chunk_index: int) -> int:
        return chunk_index * (self.chunk_ratio + 1) + self.chunk_ratio

    def payload_bat_indices(self) -> npt.NDArray[np.int64]:
        """BAT index of every payload block, in virtual order."""
        blocks = np.arange(self.payload_block_count, dtype=np.int64)
        return blocks + blocks // self.chunk_ratio

    def bitmap_bat_indices(self) -> npt.NDArray[np.int64]:
        """BAT index of every sector bitmap entry, in chunk order."""
        chunks = np.arange(self.sector_bitmap_block_count, dtype=np.int64)
        return chunks * (self.chunk_ratio + 1) + self.chunk_ratio

    def block_virtual_length(self, block_index: int) -> int:
        """Virtual bytes of block ``block_index`` (the last block may be partial)."""
        start = block_index << self.block_shift
        return max(0, min(self.block_size, self.virtual_size - start))

    def bitmap_byte_range(self, block_index: int) -> tuple[int, int]:
        """Byte range, within its chunk's sector bitmap block, that describes ``block_index``.

        Each block owns ``sectors_per_block / 8`` bytes (MS-VHDX 2.4.2): LSB-first bits, one per
        logical sector, 1 = data in this file.
        """
        j = block_index % self.chunk_ratio
        per_block = self.sectors_per_block // 8
        return j * per_block, (j + 1) * per_block
