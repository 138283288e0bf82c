"""DiskInfo: a plain snapshot of an image for inspection, the CLI and JSON output.

The fields follow ``qemu-img info`` and Hyper-V's ``Get-VHD``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .constants import PayloadBlockState
from .model.bat import split as bat_split

if TYPE_CHECKING:
    from .engine.engine import BlockEngine


@dataclass(frozen=True)
class DiskInfo:
    """What ``vhdx info`` reports about one image (``chain`` describes its parents the same way)."""

    filename: str
    format: str
    disk_type: str
    virtual_size: int
    file_size: int  # bytes the file spans (its length)
    actual_size: int | None  # bytes the file occupies on its file system (sparse files occupy less)
    block_size: int
    logical_sector_size: int
    physical_sector_size: int
    disk_id: str
    creator: str
    file_write_guid: str
    data_write_guid: str
    log_guid: str
    log_offset: int
    log_length: int
    log_state: str  # "empty", "replayed in memory", "guid set, no valid sequence"
    header_sequence_numbers: tuple[int | None, int | None]
    current_header: int  # 1 or 2
    region_table: int  # 1 or 2: the copy in use
    allocated_blocks: int
    total_blocks: int
    fragmentation_percentage: float
    parent_path: str | None
    parent_locator: dict[str, str] | None
    parent_linkage: str | None
    parent_missing: str | None  # why the parent is not open, when it is not
    problems: tuple[str, ...]
    chain: tuple[DiskInfo, ...] = field(default=())
    # Whether the open parent's DataWriteGuid is one this image's locator accepts (None without an
    # open parent); False only when the mismatch was overridden with ignore_id_mismatch.
    parent_link_ok: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (chain entries included)."""
        d = asdict(self)
        d["header_sequence_numbers"] = list(self.header_sequence_numbers)
        d["problems"] = list(self.problems)
        d["chain"] = [c.to_dict() for c in self.chain]
        return d


def fragmentation(offsets: np.ndarray, present: np.ndarray, block_size: int) -> float:
    """Percentage of allocated blocks that do not directly follow the previous allocated block
    (in virtual order) in the file. 0 for a perfectly sequential layout."""
    allocated = offsets[present].astype(np.int64)
    if allocated.size < 2:
        return 0.0
    jumps = np.count_nonzero(allocated[1:] != allocated[:-1] + block_size)
    return round(100.0 * jumps / (allocated.size - 1), 2)


def describe(engine: BlockEngine, *, with_chain: bool = True) -> DiskInfo:
    """Build the DiskInfo of ``engine``'s image (and of its parents when ``with_chain``)."""
    image = engine.image
    header = image.headers.current
    h1, h2 = image.headers.headers
    meta = image.metadata
    view = bat_split(image.bat, image.geometry)  # the current BAT: writes may have changed it
    present = (view.payload_states == PayloadBlockState.FULLY_PRESENT) | (
        view.payload_states == PayloadBlockState.PARTIALLY_PRESENT)
    if image.log_replayed_in_memory:
        log_state = "replayed in memory"
    elif header.log_is_empty:
        log_state = "empty"
    else:
        log_state = "guid set, no valid sequence"
    actual: int | None = None
    fd = getattr(image.raw_source, "fd", None)
    if fd is not None and fd >= 0:
        st = os.fstat(fd)
        actual = getattr(st, "st_blocks", 0) * 512 or None
    locator = meta.parent_locator
    parent_link_ok: bool | None = None
    if engine.parent is not None and locator is not None:
        parent_link_ok = engine.parent.image.headers.current.data_write_guid in locator.linkages
    chain: tuple[DiskInfo, ...] = ()
    if with_chain and engine.parent is not None:
        parent_info = describe(engine.parent, with_chain=True)
        chain = (parent_info,) + parent_info.chain
    return DiskInfo(
        filename=image.name,
        format="vhdx",
        disk_type=image.disk_type,
        virtual_size=image.geometry.virtual_size,
        file_size=image.raw_source.size(),
        actual_size=actual,
        block_size=image.geometry.block_size,
        logical_sector_size=image.geometry.logical_sector_size,
        physical_sector_size=meta.physical_sector_size,
        disk_id=str(meta.virtual_disk_id),
        creator=image.creator,
        file_write_guid=str(header.file_write_guid),
        data_write_guid=str(header.data_write_guid),
        log_guid=str(header.log_guid),
        log_offset=header.log_offset,
        log_length=header.log_length,
        log_state=log_state,
        header_sequence_numbers=(h1.sequence_number if h1 else None, h2.sequence_number if h2 else None),
        current_header=image.headers.current_index + 1,
        region_table=image.region_table_index + 1,
        allocated_blocks=int(np.count_nonzero(present)),
        total_blocks=image.geometry.payload_block_count,
        fragmentation_percentage=fragmentation(view.payload_offsets, present, image.geometry.block_size),
        parent_path=engine.parent.image.name if engine.parent is not None else None,
        parent_locator=dict(locator.entries) if locator else None,
        parent_linkage=locator.get("parent_linkage") if locator else None,
        parent_missing=engine.parent_missing,
        problems=tuple(image.problems),
        chain=chain,
        parent_link_ok=parent_link_ok,
    )
