"""Partition tables inside a virtual disk: MBR (primary, extended and logical) and GPT.

Pure: the caller passes ``read(offset, length) -> bytes`` over the virtual disk. Everything read
is bounded (one MBR per EBR, at most MAX_LOGICAL_PARTITIONS of them, at most GPT_MAX_ENTRY_ARRAY
bytes of GPT entries), and damage is reported in ``PartitionTable.problems`` rather than raised:
a partition list is evidence, and a half-readable table is still worth showing.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from ..constants import (
    GPT_ENTRY_MIN_SIZE,
    GPT_HEADER_LBA,
    GPT_HEADER_MIN_SIZE,
    GPT_MAX_ENTRY_ARRAY,
    GPT_SIGNATURE,
    MAX_LOGICAL_PARTITIONS,
    MBR_ACTIVE_FLAG,
    MBR_BOOT_SIGNATURE,
    MBR_DISK_SIGNATURE_OFFSET,
    MBR_EXTENDED_TYPES,
    MBR_FIRST_LOGICAL_INDEX,
    MBR_SIZE,
    MBR_TYPE_EMPTY,
    MBR_TYPE_PROTECTIVE_GPT,
)
from ..structs.partition_table import GPT_ENTRY, GPT_HEADER, GPT_HEADER_CRC_OFFSET, GPT_HEADER_SIZE, MBR

Reader = Callable[[int, int], bytes]

# Names of common partition types, for display only.
MBR_TYPE_NAMES = {
    0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16", 0x07: "HPFS/NTFS/exFAT", 0x0B: "W95 FAT32",
    0x0C: "W95 FAT32 (LBA)", 0x0E: "W95 FAT16 (LBA)", 0x0F: "W95 Ext'd (LBA)", 0x27: "Hidden NTFS WinRE",
    0x42: "Windows dynamic (LDM)", 0x82: "Linux swap", 0x83: "Linux", 0x85: "Linux extended", 0x8E: "Linux LVM",
    0xA5: "FreeBSD", 0xEE: "GPT protective", 0xEF: "EFI (FAT)", 0xFD: "Linux raid autodetect",
}
GPT_TYPE_NAMES = {
    uuid.UUID("c12a7328-f81f-11d2-ba4b-00a0c93ec93b"): "EFI System",
    uuid.UUID("e3c9e316-0b5c-4db8-817d-f92df00215ae"): "Microsoft reserved",
    uuid.UUID("ebd0a0a2-b9e5-4433-87c0-68b6b72699c7"): "Microsoft basic data",
    uuid.UUID("de94bba4-06d1-4d40-a16a-bfd50179d6ac"): "Windows recovery environment",
    uuid.UUID("5808c8aa-7e8f-42e0-85d2-e1e90434cfb3"): "Windows LDM metadata",
    uuid.UUID("af9b60a0-1431-4f62-bc68-3311714a69ad"): "Windows LDM data",
    uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4"): "Linux filesystem",
    uuid.UUID("0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"): "Linux swap",
    uuid.UUID("e6d6d379-f507-44c2-a23c-238f2a3df928"): "Linux LVM",
    uuid.UUID("a19d880f-05fc-4d3b-a006-743f0f84911e"): "Linux RAID",
    uuid.UUID("4f68bce3-e8cd-4db1-96e7-fbcaf984b709"): "Linux root (x86-64)",
    uuid.UUID("bc13c2ff-59e6-4262-a352-b275fd6f7172"): "Linux extended boot",
    uuid.UUID("21686148-6449-6e6f-744e-656564454649"): "BIOS boot",
}


@dataclass(frozen=True)
class Partition:
    """One partition: where it is (bytes on the virtual disk) and what the table says of it."""

    index: int  # 1-based; MBR logical partitions from 5
    start: int
    length: int
    kind: str  # "primary", "extended", "logical" (MBR) or "gpt"
    type: str  # "0x83" (MBR) or the type GUID (GPT)
    type_name: str
    bootable: bool = False
    name: str = ""  # GPT partition name
    guid: str = ""  # GPT unique partition GUID
    attributes: int = 0  # GPT attribute bits

    @property
    def end(self) -> int:
        return self.start + self.length


@dataclass
class PartitionTable:
    scheme: str  # "gpt", "mbr" or "none"
    partitions: list[Partition] = field(default_factory=list)
    disk_guid: str = ""  # GPT disk GUID
    mbr_signature: int | None = None  # the 32-bit disk signature at MBR offset 440
    protective_mbr: bool = False
    problems: list[str] = field(default_factory=list)


def read_partition_table(read: Reader, disk_size: int, sector_size: int) -> PartitionTable:
    """Decode the partition table of a ``disk_size``-byte disk with ``sector_size``-byte LBAs."""
    head = read(0, MBR_SIZE)
    if len(head) < MBR_SIZE or head[-2:] != MBR_BOOT_SIGNATURE:
        gpt = _read_gpt(read, disk_size, sector_size, PartitionTable("none"))
        return gpt if gpt.scheme == "gpt" else PartitionTable("none")
    mbr = MBR.parse(head)
    table = PartitionTable("mbr", mbr_signature=int.from_bytes(head[MBR_DISK_SIGNATURE_OFFSET : MBR_DISK_SIGNATURE_OFFSET + 4], "little"))
    if any(e.type == MBR_TYPE_PROTECTIVE_GPT for e in mbr.entries):
        table.protective_mbr = True
        gpt = _read_gpt(read, disk_size, sector_size, table)
        if gpt.scheme == "gpt":
            return gpt
        table.problems.append("protective MBR but no valid GPT; showing the MBR entries")
    for i, e in enumerate(mbr.entries, start=1):
        if e.type == MBR_TYPE_EMPTY or e.sectors == 0:
            continue
        extended = e.type in MBR_EXTENDED_TYPES
        part = _mbr_partition(i, e, 0, sector_size, "extended" if extended else "primary")
        _check_bounds(table, part, disk_size)
        table.partitions.append(part)
        if extended:
            _read_logical(read, disk_size, sector_size, e.lba_first, e.sectors, table)
    return table


def _mbr_partition(index: int, e: object, base_lba: int, sector_size: int, kind: str) -> Partition:
    return Partition(index=index, start=(base_lba + e.lba_first) * sector_size, length=e.sectors * sector_size,  # type: ignore[attr-defined]
                     kind=kind, type=f"0x{e.type:02x}", type_name=MBR_TYPE_NAMES.get(e.type, "unknown"),  # type: ignore[attr-defined]
                     bootable=bool(e.status & MBR_ACTIVE_FLAG))  # type: ignore[attr-defined]


def _read_logical(read: Reader, disk_size: int, sector_size: int, ext_lba: int, ext_sectors: int,
                  table: PartitionTable) -> None:
    """Walk the EBR chain: each EBR's first entry is a logical partition (relative to that EBR),
    its second links to the next EBR (relative to the extended partition's start)."""
    ebr_lba = ext_lba
    seen: set[int] = set()
    index = MBR_FIRST_LOGICAL_INDEX
    for _ in range(MAX_LOGICAL_PARTITIONS):
        if ebr_lba in seen:
            table.problems.append(f"the extended partition's EBR chain loops at LBA {ebr_lba}")
            return
        seen.add(ebr_lba)
        if (ebr_lba + 1) * sector_size > disk_size:
            table.problems.append(f"an EBR at LBA {ebr_lba} lies past the end of the disk")
            return
        raw = read(ebr_lba * sector_size, MBR_SIZE)
        if len(raw) < MBR_SIZE or raw[-2:] != MBR_BOOT_SIGNATURE:
            table.problems.append(f"the EBR at LBA {ebr_lba} has no boot signature")
            return
        ebr = MBR.parse(raw)
        first, link = ebr.entries[0], ebr.entries[1]
        if first.type != MBR_TYPE_EMPTY and first.sectors:
            part = _mbr_partition(index, first, ebr_lba, sector_size, "logical")
            _check_bounds(table, part, disk_size)
            table.partitions.append(part)
            index += 1
        if link.type not in MBR_EXTENDED_TYPES or link.sectors == 0:
            return
        if link.lba_first >= ext_sectors:
            table.problems.append(f"the EBR at LBA {ebr_lba} links outside the extended partition")
            return
        ebr_lba = ext_lba + link.lba_first
    table.problems.append(f"more than {MAX_LOGICAL_PARTITIONS} logical partitions; the rest are not listed")


def _read_gpt(read: Reader, disk_size: int, sector_size: int, mbr: PartitionTable) -> PartitionTable:
    """The primary GPT, or the backup at the last LBA when the primary is damaged."""
    last_lba = disk_size // sector_size - 1
    problems: list[str] = []
    for label, lba in (("primary", GPT_HEADER_LBA), ("backup", last_lba)):
        if lba <= 0:
            continue
        table = _gpt_at(read, disk_size, sector_size, lba, problems, label)
        if table is not None:
            table.protective_mbr = mbr.protective_mbr
            table.mbr_signature = mbr.mbr_signature
            table.problems = problems + table.problems
            return table
    mbr.problems.extend(problems)
    return mbr


def _gpt_at(read: Reader, disk_size: int, sector_size: int, lba: int, problems: list[str],
            label: str) -> PartitionTable | None:
    raw = read(lba * sector_size, sector_size)
    if len(raw) < GPT_HEADER_SIZE or raw[: len(GPT_SIGNATURE)] != GPT_SIGNATURE:
        if label == "primary":
            problems.append("no GPT header at LBA 1")
        return None
    h = GPT_HEADER.parse(raw[:GPT_HEADER_SIZE])
    if not GPT_HEADER_MIN_SIZE <= h.header_size <= sector_size:
        problems.append(f"{label} GPT header: size {h.header_size} is invalid")
        return None
    body = bytearray(raw[: h.header_size])
    body[GPT_HEADER_CRC_OFFSET : GPT_HEADER_CRC_OFFSET + 4] = bytes(4)
    if zlib.crc32(body) != h.header_crc32:
        problems.append(f"{label} GPT header: CRC mismatch")
        return None
    if h.entry_size < GPT_ENTRY_MIN_SIZE or h.entry_size % GPT_ENTRY_MIN_SIZE:
        problems.append(f"{label} GPT header: entry size {h.entry_size} is invalid")
        return None
    array_size = h.entry_count * h.entry_size
    if array_size > GPT_MAX_ENTRY_ARRAY:
        problems.append(f"{label} GPT: {h.entry_count} entries of {h.entry_size} bytes is more than this tool reads")
        return None
    if (h.entries_lba * sector_size + array_size) > disk_size:
        problems.append(f"{label} GPT: the entry array lies past the end of the disk")
        return None
    entries = read(h.entries_lba * sector_size, array_size)
    if zlib.crc32(entries) != h.entries_crc32:
        problems.append(f"{label} GPT: entry array CRC mismatch")
        return None
    table = PartitionTable("gpt", disk_guid=str(h.disk_guid))
    if label == "backup":
        table.problems.append("using the backup GPT (the primary is damaged)")
    for i in range(h.entry_count):
        e = GPT_ENTRY.parse(entries[i * h.entry_size : i * h.entry_size + GPT_ENTRY.sizeof()])
        if e.type_guid.int == 0:
            continue
        if e.last_lba < e.first_lba:
            table.problems.append(f"GPT entry {i + 1}: last LBA before first LBA")
            continue
        name = e.name.decode("utf-16-le", "replace").split("\x00", 1)[0]
        part = Partition(index=i + 1, start=e.first_lba * sector_size,
                         length=(e.last_lba - e.first_lba + 1) * sector_size, kind="gpt", type=str(e.type_guid),
                         type_name=GPT_TYPE_NAMES.get(e.type_guid, "unknown"), name=name, guid=str(e.unique_guid),
                         attributes=e.attributes)
        _check_bounds(table, part, disk_size)
        table.partitions.append(part)
    return table


def _check_bounds(table: PartitionTable, part: Partition, disk_size: int) -> None:
    if part.end > disk_size:
        table.problems.append(f"partition {part.index} ends past the end of the disk "
                              f"(0x{part.end:x} > 0x{disk_size:x})")
