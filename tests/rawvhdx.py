"""An independent, minimal decoder of VHDX files, for checking what the writer put on disk.

Written from VHDX-FORMAT.md with ``struct`` and the ``crc32c`` package only: it shares no code with
``vhdx`` (not its structs, model, checksum module or constants), so a wrong offset or field in the
library cannot be mirrored here and pass unnoticed. It decodes exactly what the write tests look
at -- headers, region tables, metadata items, the parent locator, BAT entries, sector bitmap bits
and log entry headers -- and validates signatures and checksums as it goes.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import crc32c
import numpy as np

KiB = 1024
MiB = 1024 * KiB

# VHDX-FORMAT.md 1.1
HEADER_SLOTS = (64 * KiB, 128 * KiB)
REGION_TABLE_SLOTS = (192 * KiB, 256 * KiB)

# VHDX-FORMAT.md 0.1
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VIRTUAL_DISK_ID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")

# VHDX-FORMAT.md 8.2
NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED, FULLY_PRESENT, PARTIALLY_PRESENT = 0, 1, 2, 3, 6, 7
SB_PRESENT = 6


def _guid(raw: bytes) -> uuid.UUID:
    return uuid.UUID(bytes_le=bytes(raw))


def _crc_ok(buf: bytes, at: int) -> bool:
    buf = bytes(buf)
    zeroed = buf[:at] + b"\0\0\0\0" + buf[at + 4 :]
    return crc32c.crc32c(zeroed) == struct.unpack_from("<I", buf, at)[0]


@dataclass(frozen=True)
class RawHeader:
    valid: bool  # signature 'head' and a matching CRC-32C over 4 KiB
    sequence_number: int
    file_write_guid: uuid.UUID
    data_write_guid: uuid.UUID
    log_guid: uuid.UUID
    log_version: int
    version: int
    log_length: int
    log_offset: int
    raw: bytes


@dataclass(frozen=True)
class RawRegion:
    guid: uuid.UUID
    file_offset: int
    length: int
    required: bool


@dataclass(frozen=True)
class RawMetadataEntry:
    item_id: uuid.UUID
    offset: int
    length: int
    flags: int


@dataclass
class RawImage:
    """Everything the write tests check, decoded from the bytes of one file."""

    path: Path
    file_size: int
    creator: str
    headers: tuple[RawHeader, RawHeader]
    region_tables: tuple[bytes, bytes]
    regions: dict[uuid.UUID, RawRegion]
    metadata_entries: dict[uuid.UUID, RawMetadataEntry]
    block_size: int
    leave_block_allocated: bool
    has_parent: bool
    virtual_size: int
    disk_id: uuid.UUID
    logical_sector_size: int
    physical_sector_size: int
    locator_type: uuid.UUID | None
    locator: dict[str, str] | None
    bat: np.ndarray  # uint64, every entry of the BAT region

    @property
    def current(self) -> RawHeader:
        h1, h2 = self.headers
        if h1.valid and (not h2.valid or h1.sequence_number > h2.sequence_number):
            return h1
        assert h2.valid
        return h2

    # --- geometry, computed here from the spec's formulas (VHDX-FORMAT.md 8.4) ---
    @property
    def chunk_ratio(self) -> int:
        return (1 << 23) * self.logical_sector_size // self.block_size

    @property
    def payload_blocks(self) -> int:
        return -(-self.virtual_size // self.block_size)

    @property
    def bitmap_blocks(self) -> int:
        return -(-self.payload_blocks // self.chunk_ratio)

    def payload_index(self, block: int) -> int:
        return block + block // self.chunk_ratio

    def bitmap_index(self, chunk: int) -> int:
        return chunk * (self.chunk_ratio + 1) + self.chunk_ratio

    def payload_entry(self, block: int) -> tuple[int, int]:
        """(state, file offset) of payload block ``block``."""
        e = int(self.bat[self.payload_index(block)])
        return e & 7, (e >> 20) << 20

    def bitmap_entry(self, chunk: int) -> tuple[int, int]:
        i = self.bitmap_index(chunk)
        e = int(self.bat[i]) if i < len(self.bat) else 0
        return e & 7, (e >> 20) << 20

    def payload_entries(self) -> list[tuple[int, int]]:
        return [self.payload_entry(b) for b in range(self.payload_blocks)]

    def sector_bits(self, block: int) -> np.ndarray:
        """The sector bitmap bits of payload block ``block`` (LSB first, one per logical sector);
        all zero when the chunk has no sector bitmap block."""
        spb = self.block_size // self.logical_sector_size
        state, offset = self.bitmap_entry(block // self.chunk_ratio)
        if state != SB_PRESENT:
            return np.zeros(spb, dtype=np.uint8)
        j = block % self.chunk_ratio
        with open(self.path, "rb") as f:
            f.seek(offset + j * spb // 8)
            raw = f.read(spb // 8)
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")


def _read(f, offset: int, length: int) -> bytes:  # type: ignore[no-untyped-def]
    f.seek(offset)
    data = f.read(length)
    return data + bytes(length - len(data))


def parse_header(raw: bytes) -> RawHeader:
    raw = bytes(raw)
    sig = raw[:4]
    seq, = struct.unpack_from("<Q", raw, 8)
    log_version, version, log_length, log_offset = struct.unpack_from("<HHIQ", raw, 64)
    return RawHeader(
        valid=sig == b"head" and _crc_ok(raw, 4),
        sequence_number=seq,
        file_write_guid=_guid(raw[16:32]),
        data_write_guid=_guid(raw[32:48]),
        log_guid=_guid(raw[48:64]),
        log_version=log_version,
        version=version,
        log_length=log_length,
        log_offset=log_offset,
        raw=raw,
    )


def read_headers(path: Path) -> tuple[RawHeader, RawHeader]:
    with open(path, "rb") as f:
        return tuple(parse_header(_read(f, slot, 4 * KiB)) for slot in HEADER_SLOTS)  # type: ignore[return-value]


def _parse_locator(data: bytes) -> tuple[uuid.UUID, dict[str, str]]:
    locator_type = _guid(data[:16])
    count, = struct.unpack_from("<H", data, 18)
    out: dict[str, str] = {}
    for i in range(count):
        ko, vo, kl, vl = struct.unpack_from("<IIHH", data, 20 + 12 * i)
        key = data[ko : ko + kl].decode("utf-16-le")
        assert key not in out, f"duplicate locator key {key}"
        out[key] = data[vo : vo + vl].decode("utf-16-le")
    return locator_type, out


def read_image(path: Path) -> RawImage:
    """Decode ``path``; asserts the checksums and signatures a valid file must have."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        ident = _read(f, 0, 64 * KiB)
        assert ident[:8] == b"vhdxfile", "file type identifier"
        creator = ident[8:520].decode("utf-16-le").split("\0", 1)[0]
        headers = tuple(parse_header(_read(f, slot, 4 * KiB)) for slot in HEADER_SLOTS)
        tables = tuple(_read(f, slot, 64 * KiB) for slot in REGION_TABLE_SLOTS)
        for t in tables:
            assert t[:4] == b"regi" and _crc_ok(t, 4), "region table signature/checksum"
        table = tables[0]
        count, = struct.unpack_from("<I", table, 8)
        regions: dict[uuid.UUID, RawRegion] = {}
        for i in range(count):
            guid = _guid(table[16 + 32 * i : 32 + 32 * i])
            off, length, flags = struct.unpack_from("<QII", table, 32 + 32 * i)
            regions[guid] = RawRegion(guid, off, length, bool(flags & 1))
        meta = regions[METADATA_GUID]
        mtable = _read(f, meta.file_offset, 64 * KiB)
        assert mtable[:8] == b"metadata", "metadata table signature"
        mcount, = struct.unpack_from("<H", mtable, 10)
        entries: dict[uuid.UUID, RawMetadataEntry] = {}
        values: dict[uuid.UUID, bytes] = {}
        for i in range(mcount):
            base = 32 + 32 * i
            item = _guid(mtable[base : base + 16])
            off, length, flags = struct.unpack_from("<III", mtable, base + 16)
            entries[item] = RawMetadataEntry(item, off, length, flags)
            values[item] = _read(f, meta.file_offset + off, length)
        block_size, bits = struct.unpack("<II", values[FILE_PARAMETERS])
        virtual_size, = struct.unpack("<Q", values[VIRTUAL_DISK_SIZE])
        logical, = struct.unpack("<I", values[LOGICAL_SECTOR])
        physical, = struct.unpack("<I", values[PHYSICAL_SECTOR])
        locator_type = locator = None
        if PARENT_LOCATOR in values:
            locator_type, locator = _parse_locator(values[PARENT_LOCATOR])
        bat_region = regions[BAT_GUID]
        bat = np.frombuffer(_read(f, bat_region.file_offset, bat_region.length), dtype="<u8").astype(np.uint64)
    return RawImage(
        path=path, file_size=size, creator=creator, headers=headers, region_tables=tables,  # type: ignore[arg-type]
        regions=regions, metadata_entries=entries, block_size=block_size,
        leave_block_allocated=bool(bits & 1), has_parent=bool(bits & 2), virtual_size=virtual_size,
        disk_id=_guid(values[VIRTUAL_DISK_ID]), logical_sector_size=logical, physical_sector_size=physical,
        locator_type=locator_type, locator=locator, bat=bat,
    )


@dataclass(frozen=True)
class RawLogEntry:
    log_offset: int  # offset of the entry inside the log
    length: int
    tail: int
    sequence_number: int
    descriptor_count: int
    log_guid: uuid.UUID
    checksum_ok: bool


def current_header(file: bytes) -> RawHeader:
    """The current header of a whole file held in memory (VHDX-FORMAT.md 5.2)."""
    h1, h2 = (parse_header(file[slot : slot + 4 * KiB]) for slot in HEADER_SLOTS)
    return h1 if h1.valid and (not h2.valid or h1.sequence_number > h2.sequence_number) else h2


def log_entries(path: Path | bytes) -> list[RawLogEntry]:
    """Every 4 KiB position of the current header's log that holds a 'loge' header with a sane
    length, whatever its LogGuid; ``checksum_ok`` says whether its CRC matches over its
    (circular) EntryLength. ``path`` may also be the bytes of a whole file."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        cur = current_header(bytes(path[: 192 * KiB]))
        log = bytes(path[cur.log_offset : cur.log_offset + cur.log_length])
    else:
        with open(path, "rb") as f:
            cur = current_header(_read(f, 0, 192 * KiB))
            log = _read(f, cur.log_offset, cur.log_length)
    out = []
    for pos in range(0, len(log), 4 * KiB):
        if log[pos : pos + 4] != b"loge":
            continue
        length, tail, seq, dcount = struct.unpack_from("<IIQI", log, pos + 8)
        if not 0 < length <= len(log) or length % (4 * KiB):
            continue
        body = log[pos : pos + length]
        if len(body) < length:  # the entry wraps around the end of the log
            body += log[: length - len(body)]
        out.append(RawLogEntry(pos, length, tail, seq, dcount, _guid(log[pos + 32 : pos + 48]), _crc_ok(body, 4)))
    return out
