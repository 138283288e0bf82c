"""DiskGeometry: parameter checks and the worked address translation of VHDX-FORMAT.md 8.6.
(The index arithmetic itself is property-tested in tests/property/test_prop_geometry.py.)"""

from __future__ import annotations

import pytest

from vhdx.constants import GiB, MiB, TiB
from vhdx.errors import CorruptStructureError
from vhdx.model.geometry import DiskGeometry


def test_worked_translation_127_gib() -> None:
    # "for a 127 GiB disk with 512 B sectors and 32 MiB blocks, at virtual offset 5 GiB + 1234"
    g = DiskGeometry(127 * GiB, 32 * MiB, 512)
    offset = 5 * GiB + 1234
    block = g.block_of(offset)
    assert block == 160 and offset - block * g.block_size == 1234
    chunk = g.chunk_of_block(block)
    assert chunk == 1
    assert g.payload_bat_index(block) == 161
    assert g.bitmap_bat_index(chunk) == 257
    sector = offset // g.logical_sector_size
    assert sector == 10_485_762
    bit = sector % (g.chunk_size // g.logical_sector_size)
    assert bit == 2_097_154 and (bit >> 3, bit & 7) == (262_144, 2)
    lo, hi = g.bitmap_byte_range(block)
    assert lo <= bit >> 3 < hi


def test_qemu_verified_index() -> None:
    # "QEMU placed the block at virtual offset 4 GiB of a 5 GiB disk with 1 MiB blocks (CR 4096) at BAT index 4097."
    g = DiskGeometry(5 * GiB, MiB, 512)
    assert g.chunk_ratio == 4096
    assert g.payload_bat_index(g.block_of(4 * GiB)) == 4097


@pytest.mark.parametrize(("sector", "block", "ratio"), [
    (512, MiB, 4096), (512, 2 * MiB, 2048), (512, 4 * MiB, 1024), (512, 32 * MiB, 128), (512, 256 * MiB, 16),
    (4096, MiB, 32768), (4096, 2 * MiB, 16384), (4096, 4 * MiB, 8192), (4096, 32 * MiB, 1024),
    (4096, 256 * MiB, 128)])
def test_chunk_ratio_table(sector: int, block: int, ratio: int) -> None:
    # VHDX-FORMAT.md 8.4: "ChunkRatio values"
    assert DiskGeometry(GiB, block, sector).chunk_ratio == ratio


@pytest.mark.parametrize(("size", "block", "sector"), [
    (GiB, MiB, 1024), (GiB, MiB, 0), (GiB, 3 * MiB, 512), (GiB, MiB // 2, 512), (GiB, 512 * MiB, 512),
    (GiB, 0, 512), (64 * TiB + 512, MiB, 512), (GiB + 512, MiB, 4096), (GiB + 1, MiB, 512), (-512, MiB, 512)])
def test_invalid_parameters(size: int, block: int, sector: int) -> None:
    with pytest.raises(CorruptStructureError):
        DiskGeometry(size, block, sector)


def test_empty_disk() -> None:
    g = DiskGeometry(0, MiB, 512)
    assert (g.payload_block_count, g.sector_bitmap_block_count, g.bat_entry_count, g.bat_entry_count_full) == (0, 0, 0, 0)
    assert g.bat_region_length == MiB
    assert g.payload_bat_indices().size == 0 and g.bitmap_bat_indices().size == 0
