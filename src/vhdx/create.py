"""create(): lay out and write a new VHDX file (fixed, dynamic or differencing).

The file is built in a temporary file next to the target and moved into place only when complete,
so a crash never leaves a half-made image under the target name, and an existing file is never
replaced unless ``overwrite=True``.

References: MS-VHDX 2.1-2.6; VHDX-FORMAT.md 11.
"""

from __future__ import annotations

import os
import uuid

import numpy as np

from . import disk as _disk
from . import newfile
from .constants import (
    BAT_REGION_GUID,
    CREATOR_SIZE,
    DEFAULT_BLOCK_SIZE,
    DEFAULT_DIFFERENCING_BLOCK_SIZE,
    DEFAULT_LOG_SIZE,
    DEFAULT_LOGICAL_SECTOR_SIZE,
    DEFAULT_PHYSICAL_SECTOR_SIZE,
    FILE_PARAMETERS_HAS_PARENT,
    FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED,
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    HEADER_VERSION,
    LOG_VERSION,
    MAX_LOG_LENGTH,
    METADATA_REGION_GUID,
    OBJECT_ALIGNMENT,
    PARENT_KEY_ABSOLUTE_WIN32_PATH,
    PARENT_KEY_LINKAGE,
    PARENT_KEY_LINKAGE2,
    PARENT_KEY_RELATIVE_PATH,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    SECTOR_SIZES,
    PayloadBlockState,
)
from .errors import VhdxError
from .model._decode import build_struct
from .model.geometry import DiskGeometry
from .model.header import Header, build_header
from .model.layout import FileLayout, plan_layout
from .model.metadata import Metadata, MetadataItem, build_metadata_region, system_items
from .model.parent_locator import build_parent_locator
from .model.region_table import RegionTable, RegionTableEntry, build_region_table
from .structs import bat as bat_struct
from .structs.file_identifier import FILE_IDENTIFIER

DISK_TYPES = ("fixed", "dynamic", "differencing")
ZERO_GUID = uuid.UUID(int=0)


def default_creator() -> str:
    from . import __version__

    return f"vhdx (Python) {__version__}"


def create(
    path: str | os.PathLike[str],
    size: int | None = None,
    *,
    disk_type: str | None = None,
    block_size: int | None = None,
    logical_sector_size: int = DEFAULT_LOGICAL_SECTOR_SIZE,
    physical_sector_size: int = DEFAULT_PHYSICAL_SECTOR_SIZE,
    parent: str | os.PathLike[str] | None = None,
    log_size: int = DEFAULT_LOG_SIZE,
    overwrite: bool = False,
    preallocate: bool = False,
    creator: str | None = None,
    disk_id: uuid.UUID | None = None,
) -> _disk.VirtualDisk:
    """Create a VHDX file and return it open for writing (``"r+b"``).

    Args:
        path: the new file.
        size: virtual size in bytes; for a differencing disk, None takes the parent's size.
        disk_type: ``"dynamic"``, ``"fixed"`` or ``"differencing"`` (needs ``parent``); by default
            ``"differencing"`` when a parent is given, else ``"dynamic"``.
        block_size: power of two from 1 to 256 MiB; Hyper-V's defaults when None (32 MiB for
            fixed and dynamic, 2 MiB for differencing).
        logical_sector_size, physical_sector_size: 512 or 4096. A differencing disk takes both
            from its parent.
        parent: the parent of a differencing disk (it is opened read-only and never modified).
        log_size: bytes of log, a multiple of 1 MiB.
        overwrite: replace an existing file (never done otherwise).
        preallocate: for fixed disks, allocate the payload on the file system instead of leaving
            the file sparse (Windows refuses to attach sparse fixed images).
        creator: the creator string stored in the file identifier.
        disk_id: the Virtual Disk ID (random by default; a differencing disk shares its parent's).

    Raises:
        ValueError: a parameter is invalid (the message says which and why).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        VhdxError: the parent cannot be opened.
    """
    if disk_type is None:
        disk_type = "differencing" if parent is not None else "dynamic"
    if disk_type not in DISK_TYPES:
        raise ValueError(f"disk type must be one of {', '.join(DISK_TYPES)}, not {disk_type!r}")
    if (parent is not None) != (disk_type == "differencing"):
        raise ValueError("a parent is given exactly when the disk type is 'differencing'")
    if log_size <= 0 or log_size % OBJECT_ALIGNMENT or log_size > MAX_LOG_LENGTH:
        raise ValueError(f"log size must be a positive multiple of 1 MiB up to {MAX_LOG_LENGTH}, not {log_size}")
    locator_entries: list[tuple[str, str]] | None = None
    if disk_type == "differencing":
        assert parent is not None
        with _disk.open(parent) as p:
            if os.path.exists(path) and any(os.path.exists(d.name) and os.path.samefile(path, d.name)
                                            for d in p.chain):
                # With overwrite=True this would replace a disk of the chain by a child of it:
                # its data lost, and an image that can never open (the chain loops).
                raise ValueError("a differencing disk cannot replace its own parent or an ancestor of it")
            info = p.info()
            if size is not None and size != p.size:
                raise ValueError(f"a differencing disk has its parent's size ({p.size}), not {size}")
            size = p.size
            logical_sector_size = p.logical_sector_size
            physical_sector_size = p.physical_sector_size
            disk_id = p.disk_id
            locator_entries = parent_locator_entries(path, parent, uuid.UUID(info.data_write_guid))
        if block_size is None:
            block_size = DEFAULT_DIFFERENCING_BLOCK_SIZE
    if size is None:
        raise ValueError("a size is needed (only a differencing disk takes its parent's)")
    if block_size is None:
        block_size = DEFAULT_BLOCK_SIZE
    for label, value in (("logical", logical_sector_size), ("physical", physical_sector_size)):
        if value not in SECTOR_SIZES:
            raise ValueError(f"{label} sector size must be 512 or 4096, not {value}")
    if size <= 0:
        raise ValueError(f"size must be positive, not {size}")
    try:
        geometry = DiskGeometry(size, block_size, logical_sector_size)
    except VhdxError as err:
        raise ValueError(err.message) from None
    layout = plan_layout(geometry, log_size)
    flags = {"fixed": FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED, "dynamic": 0,
             "differencing": FILE_PARAMETERS_HAS_PARENT}[disk_type]
    metadata = Metadata(block_size=block_size, file_parameter_flags=flags, virtual_disk_size=size,
                        virtual_disk_id=disk_id or uuid.uuid4(), logical_sector_size=logical_sector_size,
                        physical_sector_size=physical_sector_size, parent_locator=None)
    locator = build_parent_locator(locator_entries) if locator_entries is not None else None
    _write_new_file(os.fspath(path), geometry, layout, metadata, locator, disk_type=disk_type, overwrite=overwrite,
                    preallocate=preallocate, creator=creator if creator is not None else default_creator())
    return _disk.open(path, "r+b")


def parent_locator_entries(child: str | os.PathLike[str], parent: str | os.PathLike[str],
                           data_write_guid: uuid.UUID) -> list[tuple[str, str]]:
    """The locator of a new child (VHDX-FORMAT.md 7.6, 11): parent_linkage, a zero
    parent_linkage2 (as Hyper-V writes), relative_path (``.\\name`` style) and the absolute path."""
    child_dir = os.path.dirname(os.path.abspath(child))
    parent_abs = os.path.abspath(parent)
    relative = os.path.relpath(parent_abs, child_dir)
    relative = relative.replace(os.sep, "\\")
    if not relative.startswith("."):
        relative = ".\\" + relative
    absolute = parent_abs if os.sep == "\\" else parent_abs.replace("/", "\\")
    return [
        (PARENT_KEY_LINKAGE, "{" + str(data_write_guid) + "}"),
        (PARENT_KEY_LINKAGE2, "{" + str(ZERO_GUID) + "}"),
        (PARENT_KEY_RELATIVE_PATH, relative),
        (PARENT_KEY_ABSOLUTE_WIN32_PATH, absolute),
    ]


def build_image_prefix(geometry: DiskGeometry, layout: FileLayout, metadata: Metadata, locator: bytes | None,
                       *, creator: str, fixed: bool) -> tuple[list[tuple[int, bytes]], int]:
    """The (offset, bytes) writes that make a new file, and its final length."""
    creator_bytes = creator.encode("utf-16-le")[: CREATOR_SIZE - 2].decode("utf-16-le", "ignore")
    writes: list[tuple[int, bytes]] = [(0, build_struct(FILE_IDENTIFIER, {"creator": creator_bytes}))]
    file_guid, data_guid = uuid.uuid4(), uuid.uuid4()
    for seq, offset in ((0, HEADER_1_OFFSET), (1, HEADER_2_OFFSET)):
        writes.append((offset, build_header(Header(
            sequence_number=seq, file_write_guid=file_guid, data_write_guid=data_guid, log_guid=ZERO_GUID,
            log_version=LOG_VERSION, version=HEADER_VERSION, log_length=layout.log_length,
            log_offset=layout.log_offset))))
    table = build_region_table(RegionTable((
        RegionTableEntry(BAT_REGION_GUID, layout.bat_offset, layout.bat_length, True),
        RegionTableEntry(METADATA_REGION_GUID, layout.metadata_offset, layout.metadata_length, True),
    )))
    writes += [(REGION_TABLE_1_OFFSET, table), (REGION_TABLE_2_OFFSET, table)]
    items: list[MetadataItem] = system_items(metadata, locator)
    writes.append((layout.metadata_offset, build_metadata_region(items, layout.metadata_length)))
    end = layout.first_block_offset
    if fixed and geometry.payload_block_count:
        bat = np.zeros(geometry.bat_entry_count_full, dtype=np.uint64)
        blocks = np.arange(geometry.payload_block_count, dtype=np.uint64)
        offsets = np.uint64(layout.first_block_offset) + blocks * np.uint64(geometry.block_size)
        bat[geometry.payload_bat_indices()] = offsets | np.uint64(PayloadBlockState.FULLY_PRESENT)
        writes.append((layout.bat_offset, bat_struct.build(bat)))
        end = layout.first_block_offset + geometry.payload_block_count * geometry.block_size
    return writes, end


def _write_new_file(path: str, geometry: DiskGeometry, layout: FileLayout, metadata: Metadata, locator: bytes | None,
                    *, disk_type: str, overwrite: bool, preallocate: bool, creator: str) -> None:
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"{path}: file exists (pass overwrite=True to replace it)")
    fixed = disk_type == "fixed"
    writes, end = build_image_prefix(geometry, layout, metadata, locator, creator=creator, fixed=fixed)
    fd, tmp = newfile.make_temp(path)
    try:
        with os.fdopen(fd, "r+b") as f:
            f.truncate(end)  # sparse: unwritten space reads as zero
            for offset, data in writes:
                f.seek(offset)
                f.write(data)
            f.flush()
            if preallocate and fixed and hasattr(os, "posix_fallocate"):
                os.posix_fallocate(f.fileno(), layout.first_block_offset, end - layout.first_block_offset)
            os.fsync(f.fileno())
        newfile.publish(tmp, path, overwrite=overwrite)
    except BaseException:
        newfile.discard(tmp)
        raise


__all__ = ["create", "parent_locator_entries"]
