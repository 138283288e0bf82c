"""Change properties of an image in place (Hyper-V's ``Set-VHD -ResetDiskIdentifier`` and
``-PhysicalSectorSizeBytes``): the Virtual Disk ID and the physical sector size.

Both are metadata items (MS-VHDX 2.6.2.3, 2.6.2.5) rewritten through the log, with every other
item (unknown ones included) kept. Neither changes a byte that a read of the virtual disk returns,
so the DataWriteGuid is kept: children of this image record its DataWriteGuid in their
``parent_linkage`` (not its disk id, VHDX-FORMAT.md 7.6), and stay linked. Children made earlier
keep the disk id they copied at their creation (7.2's fork rule), so after a reset the chain no
longer shares one id; that breaks nothing in the format.

References: MS-VHDX 2.6.2.3, 2.6.2.5, 2.6.2.6; VHDX-FORMAT.md 5.4, 7.4, 7.6.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..constants import PARENT_LOCATOR_GUID, SECTOR_SIZES
from ..disk import open_engine
from ..engine.writer import WritableEngine
from ..model.metadata import known_entries
from .result import OperationResult


@dataclass(frozen=True)
class SetResult(OperationResult):
    """What ``set_properties`` did.

    Attributes:
        image: the image, as given.
        disk_id_before, disk_id_after: the Virtual Disk ID.
        physical_sector_size_before, physical_sector_size_after: in bytes.
        changed: the file was written (False when it already had these values).
        data_write_guid: the image's DataWriteGuid, the same before and after.
        file_size_before, file_size_after: the file's length.
        seconds: wall time.
    """

    image: str
    disk_id_before: str
    disk_id_after: str
    physical_sector_size_before: int
    physical_sector_size_after: int
    changed: bool
    data_write_guid: str
    file_size_before: int
    file_size_after: int
    seconds: float


def set_properties(
    image: str | os.PathLike[str],
    *,
    reset_disk_id: bool = False,
    disk_id: uuid.UUID | None = None,
    physical_sector_size: int | None = None,
    parent_search: Sequence[str | os.PathLike[str]] = (),
    parent: str | os.PathLike[str] | None = None,
    ignore_id_mismatch: bool = False,
) -> SetResult:
    """Change the Virtual Disk ID and/or the physical sector size of ``image`` in place.

    Args:
        image: the VHDX file.
        reset_disk_id: give the disk a new random Virtual Disk ID.
        disk_id: give it this Virtual Disk ID instead.
        physical_sector_size: 512 or 4096 (reported to the guest only; the logical sector
            size, which decides the layout, cannot be changed in place).
        parent_search, parent, ignore_id_mismatch: how a differencing image's parent is found
            (a writable open needs its chain, as for any write).

    Returns:
        A ``SetResult``. Asking for nothing, or for the values the image already has, writes
        nothing.

    Raises:
        ValueError: both ``reset_disk_id`` and ``disk_id``, or an invalid sector size.
        VhdxError: the image cannot be read, or is open for writing elsewhere.
        OSError: the file cannot be opened.
    """
    started = time.monotonic()
    if reset_disk_id and disk_id is not None:
        raise ValueError("give either a new disk id or reset_disk_id, not both")
    if physical_sector_size is not None and physical_sector_size not in SECTOR_SIZES:
        raise ValueError(f"physical sector size must be 512 or 4096, not {physical_sector_size}")
    name = os.fspath(image)
    size_before = os.path.getsize(name)
    engine = open_engine(name, writable=True, parent_search=parent_search, parent=parent,
                         ignore_id_mismatch=ignore_id_mismatch)
    try:
        assert isinstance(engine, WritableEngine)
        before = engine.image.metadata
        changes: dict[str, object] = {}
        if reset_disk_id:
            changes["virtual_disk_id"] = uuid.uuid4()
        elif disk_id is not None:
            changes["virtual_disk_id"] = disk_id
        if physical_sector_size is not None:
            changes["physical_sector_size"] = physical_sector_size
        own_guid = engine.journal.header.data_write_guid
        changed = False
        if changes:
            locator = _locator_bytes(engine)
            engine.stage_metadata(dataclasses.replace(before, **changes), locator, visible=False)  # type: ignore[arg-type]
            changed = engine.journal.dirty
            engine.flush()
        after = engine.image.metadata
        assert engine.journal.header.data_write_guid == own_guid  # nothing a reader sees changed
    finally:
        engine.close()
    return SetResult(image=name, disk_id_before=str(before.virtual_disk_id), disk_id_after=str(after.virtual_disk_id),
                     physical_sector_size_before=before.physical_sector_size,
                     physical_sector_size_after=after.physical_sector_size, changed=changed,
                     data_write_guid=str(own_guid), file_size_before=size_before,
                     file_size_after=os.path.getsize(name), seconds=time.monotonic() - started)


def _locator_bytes(engine: WritableEngine) -> bytes | None:
    """The parent locator item's current bytes, kept as they are (None for a non-differencing disk)."""
    image = engine.image
    entry = known_entries(image.metadata.entries).get(PARENT_LOCATOR_GUID)
    if entry is None or not image.metadata.has_parent:
        return None
    region = image.region_table.metadata
    buf = bytearray(entry.length)
    engine.journal.read_into(region.file_offset + entry.offset, memoryview(buf))
    return bytes(buf)


__all__ = ["SetResult", "set_properties"]
