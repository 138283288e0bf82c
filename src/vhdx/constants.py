"""Every number the VHDX format defines, named as MS-VHDX names it.

Nothing outside this module writes a format constant as a literal. Each value carries the
section of MS-VHDX (and of our reference, ``shared/spec/VHDX-FORMAT.md``) that fixes it.

References: MS-VHDX 2.1, 2.2, 2.3, 2.4, 2.5, 2.6; VHDX-FORMAT.md sections 0-11.
"""

from __future__ import annotations

import enum
import uuid
from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB
GiB: Final = 1024 * MiB
TiB: Final = 1024 * GiB

# --- Layout of the 1 MiB header section (MS-VHDX 2.1) -------------------------------------
FILE_IDENTIFIER_OFFSET: Final = 0
FILE_IDENTIFIER_SIZE: Final = 64 * KiB
HEADER_1_OFFSET: Final = 64 * KiB
HEADER_2_OFFSET: Final = 128 * KiB
HEADER_SLOT_SIZE: Final = 64 * KiB
REGION_TABLE_1_OFFSET: Final = 192 * KiB
REGION_TABLE_2_OFFSET: Final = 256 * KiB
HEADER_SECTION_SIZE: Final = 1 * MiB

# Every object after the header section starts on this boundary (MS-VHDX 2.1).
OBJECT_ALIGNMENT: Final = 1 * MiB
# The BAT's FileOffsetMB and the log/region units are MiB (MS-VHDX 2.5.1).
FILE_OFFSET_UNIT: Final = 1 * MiB

# --- File type identifier (MS-VHDX 2.2.1) --------------------------------------------------
FILE_IDENTIFIER_SIGNATURE: Final = b"vhdxfile"
CREATOR_SIZE: Final = 512

# --- Headers (MS-VHDX 2.2.2) -----------------------------------------------------------------
HEADER_SIGNATURE: Final = b"head"
HEADER_SIZE: Final = 4 * KiB  # the checksum covers exactly these bytes
HEADER_VERSION: Final = 1
LOG_VERSION: Final = 0

# --- Region table (MS-VHDX 2.2.3) ------------------------------------------------------------
REGION_TABLE_SIGNATURE: Final = b"regi"
REGION_TABLE_SIZE: Final = 64 * KiB
MAX_REGION_ENTRIES: Final = 2047
REGION_REQUIRED_FLAG: Final = 0x1

BAT_REGION_GUID: Final = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION_GUID: Final = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")

# --- Metadata region (MS-VHDX 2.6) -----------------------------------------------------------
METADATA_SIGNATURE: Final = b"metadata"
METADATA_TABLE_SIZE: Final = 64 * KiB
MAX_METADATA_ENTRIES: Final = 2047
MAX_USER_METADATA_ENTRIES: Final = 1024
METADATA_ITEM_MIN_OFFSET: Final = 64 * KiB
METADATA_ITEM_MAX_LENGTH: Final = 1 * MiB

METADATA_FLAG_IS_USER: Final = 0x1
METADATA_FLAG_IS_VIRTUAL_DISK: Final = 0x2
METADATA_FLAG_IS_REQUIRED: Final = 0x4

FILE_PARAMETERS_GUID: Final = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE_GUID: Final = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VIRTUAL_DISK_ID_GUID: Final = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE_GUID: Final = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE_GUID: Final = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR_GUID: Final = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")

# File Parameters flags (MS-VHDX 2.6.2.1).
FILE_PARAMETERS_LEAVE_BLOCK_ALLOCATED: Final = 0x1
FILE_PARAMETERS_HAS_PARENT: Final = 0x2

# Parent locator (MS-VHDX 2.6.2.6).
VHDX_PARENT_LOCATOR_TYPE_GUID: Final = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
PARENT_KEY_LINKAGE: Final = "parent_linkage"
PARENT_KEY_LINKAGE2: Final = "parent_linkage2"
PARENT_KEY_RELATIVE_PATH: Final = "relative_path"
PARENT_KEY_VOLUME_PATH: Final = "volume_path"
PARENT_KEY_ABSOLUTE_WIN32_PATH: Final = "absolute_win32_path"
# Order in which the path keys are tried (MS-VHDX 2.6.2.6.1; VHDX-FORMAT.md 7.7).
PARENT_PATH_KEYS: Final = (PARENT_KEY_RELATIVE_PATH, PARENT_KEY_VOLUME_PATH, PARENT_KEY_ABSOLUTE_WIN32_PATH)

# --- Geometry limits (MS-VHDX 2.2.4, 2.6.2) -----------------------------------------------
MIN_BLOCK_SIZE: Final = 1 * MiB
MAX_BLOCK_SIZE: Final = 256 * MiB
SECTOR_SIZES: Final = (512, 4096)
MAX_VIRTUAL_DISK_SIZE: Final = 64 * TiB
# A sector bitmap block is 1 MiB: one bit per logical sector of a chunk (MS-VHDX 2.4.2).
SECTOR_BITMAP_BLOCK_SIZE: Final = 1 * MiB
SECTORS_PER_CHUNK: Final = SECTOR_BITMAP_BLOCK_SIZE * 8  # 2**23

# --- BAT entries (MS-VHDX 2.5.1) ---------------------------------------------------------------
BAT_ENTRY_SIZE: Final = 8
BAT_STATE_MASK: Final = 0x7
BAT_FILE_OFFSET_MB_SHIFT: Final = 20
BAT_FILE_OFFSET_MASK: Final = 0xFFFFFFFFFFF00000  # FileOffsetMB << 20, as a byte offset


class PayloadBlockState(enum.IntEnum):
    """Payload BAT entry states (MS-VHDX 2.5.1.1)."""

    NOT_PRESENT = 0
    UNDEFINED = 1
    ZERO = 2
    UNMAPPED = 3
    # 4 is reserved; 5 is UNMAPPED in the v0.95 draft (QEMU reads it as UNMAPPED).
    UNMAPPED_V095 = 5
    FULLY_PRESENT = 6
    PARTIALLY_PRESENT = 7


class SectorBitmapState(enum.IntEnum):
    """Sector bitmap BAT entry states (MS-VHDX 2.5.1.2)."""

    NOT_PRESENT = 0
    PRESENT = 6


# --- Log (MS-VHDX 2.3) ------------------------------------------------------------------------------
LOG_SECTOR_SIZE: Final = 4 * KiB
# LogLength is a u32 byte count and a multiple of 1 MiB (MS-VHDX 2.2.2): the largest log is 4 GiB - 1 MiB.
MAX_LOG_LENGTH: Final = 4 * GiB - 1 * MiB
LOG_ENTRY_SIGNATURE: Final = b"loge"
LOG_ZERO_DESCRIPTOR_SIGNATURE: Final = b"zero"
LOG_DATA_DESCRIPTOR_SIGNATURE: Final = b"desc"
LOG_DATA_SECTOR_SIGNATURE: Final = b"data"
LOG_ENTRY_HEADER_SIZE: Final = 64
LOG_DESCRIPTOR_SIZE: Final = 32
LOG_DESCRIPTORS_PER_SECTOR: Final = LOG_SECTOR_SIZE // LOG_DESCRIPTOR_SIZE  # 128
# Bytes 8..4091 of a logged sector travel in the data sector; bytes 0..7 in the descriptor's
# LeadingBytes and 4092..4095 in its TrailingBytes (MS-VHDX 2.3.1.3, 2.3.1.4).
LOG_DATA_LEADING_SIZE: Final = 8
LOG_DATA_TRAILING_SIZE: Final = 4
# Log entries must not target the file identifier or headers (VHDX-FORMAT.md 10.2 item 6).
LOG_PROTECTED_PREFIX: Final = REGION_TABLE_1_OFFSET

# --- Policy limits of this implementation (documented in the README) ------------------------
# Longest differencing chain we follow; Hyper-V's own limit is far lower in practice.
MAX_CHAIN_DEPTH: Final = 128
# Payload blocks examined per step when listing extents: bounds the temporary arrays (about 20
# bytes a block) however large the BAT is.
EXTENT_WINDOW_BLOCKS: Final = 1024 * 1024
# Log entries may carry sectors past their descriptors' (MS-VHDX allows it; writers do not).
# Checksumming such extra sectors is the one part of a log scan that candidate entries can make
# overlap; the extra bytes checksummed in one scan stop at this many times the log length.
LOG_EXTRA_CHECKSUM_FACTOR: Final = 4
# Key/value entries read from a parent locator: Hyper-V writes five, the field allows 65535, and
# each entry decodes two strings, so a hostile count would cost seconds and memory per open.
MAX_PARENT_LOCATOR_ENTRIES: Final = 1024
# No valid image is larger than this: 64 TiB of payload plus its BAT and bitmaps is under 65 TiB.
# File offsets and sizes read from the file beyond it are corrupt.
MAX_FILE_SIZE: Final = 128 * TiB
# Remote images (fsspec URLs): reads smaller than a cache block fetch the aligned block around
# them and keep it in an LRU cache of this many blocks (64 MiB at most); larger reads are fetched
# exactly, in requests of at most REMOTE_MAX_REQUEST bytes, and not cached.
REMOTE_CACHE_BLOCK_SIZE: Final = 1 * MiB
REMOTE_CACHE_BLOCKS: Final = 64
REMOTE_MAX_REQUEST: Final = 64 * MiB
# Local reads of at least two pieces are split between the caller and helper threads
# (engine/helpers.py): one piece per thread, never smaller than this, and at most this many
# helpers however many CPUs there are (the copy from the page cache saturates memory first).
READ_SPLIT_MIN_PIECE: Final = 512 * KiB
MAX_READ_HELPERS: Final = 3
# Reads into a buffer of our own use a page-aligned one (engine/buffers.py) from this size on;
# below it, setting up an anonymous mapping costs more than the faster copy saves.
ALIGNED_BUFFER_MIN: Final = 256 * KiB
# A caller's buffer that starts inside a cache line is read through an aligned buffer of at most
# ALIGNMENT_BOUNCE_SIZE bytes (per thread) where the kernel copies into such a buffer more than
# ALIGNMENT_PENALTY times slower; measured once per offset, best of ALIGNMENT_PROBE_ROUNDS reads
# of ALIGNMENT_PROBE_SIZE bytes each way (engine/source.py).
ALIGNMENT_BOUNCE_SIZE: Final = 8 * MiB
ALIGNMENT_PENALTY: Final = 2.0
ALIGNMENT_PROBE_SIZE: Final = 256 * KiB
ALIGNMENT_PROBE_ROUNDS: Final = 8

# --- Defaults for new files (VHDX-FORMAT.md 11; Hyper-V's observed defaults) ------------------
DEFAULT_BLOCK_SIZE: Final = 32 * MiB  # fixed and dynamic
DEFAULT_DIFFERENCING_BLOCK_SIZE: Final = 2 * MiB
DEFAULT_LOG_SIZE: Final = 1 * MiB
DEFAULT_LOGICAL_SECTOR_SIZE: Final = 512
DEFAULT_PHYSICAL_SECTOR_SIZE: Final = 4096
METADATA_REGION_SIZE: Final = 1 * MiB

# --- Partition tables inside the virtual disk (MBR; UEFI 2.10 section 5.3, GPT) ----------------------
# Not part of VHDX: read to list and extract partitions. LBAs count logical sectors of the disk.
MBR_SIZE: Final = 512
MBR_PARTITION_TABLE_OFFSET: Final = 446
MBR_PARTITION_ENTRIES: Final = 4
MBR_DISK_SIGNATURE_OFFSET: Final = 440
MBR_BOOT_SIGNATURE: Final = b"\x55\xaa"
MBR_BOOT_SIGNATURE_OFFSET: Final = 510
MBR_ACTIVE_FLAG: Final = 0x80
MBR_TYPE_EMPTY: Final = 0x00
MBR_TYPE_PROTECTIVE_GPT: Final = 0xEE
MBR_EXTENDED_TYPES: Final = frozenset({0x05, 0x0F, 0x85})
MBR_FIRST_LOGICAL_INDEX: Final = 5  # logical partitions are numbered from 5, as Linux does
MAX_LOGICAL_PARTITIONS: Final = 1024  # an EBR chain longer than this is corrupt (or a loop)
GPT_SIGNATURE: Final = b"EFI PART"
GPT_HEADER_LBA: Final = 1
GPT_HEADER_MIN_SIZE: Final = 92
GPT_ENTRY_MIN_SIZE: Final = 128
# Bounds against hostile tables: the entry array read is at most this big (128 x 128 bytes is normal).
GPT_MAX_ENTRY_ARRAY: Final = 1 * MiB
GPT_NAME_SIZE: Final = 72
