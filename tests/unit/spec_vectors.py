"""Known-answer vectors transcribed from VHDX-FORMAT.md section 16 (all accepted by qemu-img 7.2).

The hex below is copied from the reference document, not produced by this library: it is the
oracle for the structs and model tests. ``dump()`` turns "offset: hex bytes" lines into a buffer
of the given size whose other bytes are zero, as the document states ("the rest zero").
"""

from __future__ import annotations

import uuid

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


def dump(text: str, size: int) -> bytes:
    """Build ``size`` bytes from lines ``OFFSET HEX HEX ...`` (offset in hex); the rest is zero."""
    buf = bytearray(size)
    for line in text.strip().splitlines():
        offset, _, hexbytes = line.strip().partition(" ")
        data = bytes.fromhex(hexbytes)
        start = int(offset, 16)
        buf[start : start + len(data)] = data
    return bytes(buf)


# --- 16: header ------------------------------------------------------------------------------------
HEADER_FILE_WRITE_GUID = uuid.UUID("01234567-89ab-cdef-0123-456789abcdef")
HEADER_DATA_WRITE_GUID = uuid.UUID("fedcba98-7654-3210-fedc-ba9876543210")
HEADER_CHECKSUM = 0x146435B7
HEADER_BYTES = dump(
    """
    0000 68 65 61 64 b7 35 64 14 01 00 00 00 00 00 00 00
    0010 67 45 23 01 ab 89 ef cd 01 23 45 67 89 ab cd ef
    0020 98 ba dc fe 54 76 10 32 fe dc ba 98 76 54 32 10
    0030 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    0040 00 00 01 00 00 00 10 00 00 00 10 00 00 00 00 00
    """,
    4 * KiB,
)
HEADER_FIELDS = dict(
    sequence_number=1,
    file_write_guid=HEADER_FILE_WRITE_GUID,
    data_write_guid=HEADER_DATA_WRITE_GUID,
    log_guid=uuid.UUID(int=0),
    log_version=0,
    version=1,
    log_length=MiB,
    log_offset=MiB,
)

# --- 16: region table (Windows layout, Required = 1) ---------------------------------------------
REGION_TABLE_CHECKSUM = 0xC66B8CAE
REGION_TABLE_BYTES = dump(
    """
    0000 72 65 67 69 ae 8c 6b c6 02 00 00 00 00 00 00 00
    0010 66 77 c2 2d 23 f6 00 42 9d 64 11 5e 9b fd 4a 08
    0020 00 00 30 00 00 00 00 00 00 00 10 00 01 00 00 00
    0030 06 a2 7c 8b 90 47 9a 4b b8 fe 57 5f 05 0f 88 6e
    0040 00 00 20 00 00 00 00 00 00 00 10 00 01 00 00 00
    """,
    64 * KiB,
)
# (bat offset, metadata offset, required) of the two tables of section 16.
REGION_TABLE_WINDOWS = (3 * MiB, 2 * MiB, True)
# "The same table as QEMU writes it, with BAT @ 2 MiB, metadata @ 3 MiB and Required = 0".
REGION_TABLE_QEMU = (2 * MiB, 3 * MiB, False)
REGION_TABLE_QEMU_CHECKSUM = 0x2C6FCE83

# --- 16: metadata table -----------------------------------------------------------------------------
METADATA_BLOCK_SIZE = 32 * MiB
METADATA_VIRTUAL_SIZE = GiB
METADATA_DISK_ID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")
METADATA_LOGICAL = 512
METADATA_PHYSICAL = 4096
# The region's first 64 KiB + 0x28 bytes (the items follow the table at 0x10000).
METADATA_REGION_PREFIX = dump(
    """
    0000 6d 65 74 61 64 61 74 61 00 00 05 00 00 00 00 00
    0020 37 67 a1 ca 36 fa 43 4d b3 b6 33 f0 aa 44 e7 6b 00 00 01 00 08 00 00 00 04 00 00 00 00 00 00 00
    0040 24 42 a5 2f 1b cd 76 48 b2 11 5d be d8 3b f4 b8 08 00 01 00 08 00 00 00 06 00 00 00 00 00 00 00
    0060 ab 12 ca be e6 b2 23 45 93 ef c3 09 e0 00 c7 46 10 00 01 00 10 00 00 00 06 00 00 00 00 00 00 00
    0080 1d bf 41 81 6f a9 09 47 ba 47 f2 33 a8 fa ab 5f 20 00 01 00 04 00 00 00 06 00 00 00 00 00 00 00
    00a0 c7 48 a3 cd 5d 44 71 44 9c c9 e9 88 52 51 c5 56 24 00 01 00 04 00 00 00 06 00 00 00 00 00 00 00
    10000 00 00 00 02 00 00 00 00 00 00 00 40 00 00 00 00 33 22 11 00 55 44 77 66 88 99 aa bb cc dd ee ff 00 02 00 00 00 10 00 00
    """,
    64 * KiB + 0x28,
)

# --- 16: log entry ------------------------------------------------------------------------------------
LOG_GUID = uuid.UUID("a1b2c3d4-0000-4000-8000-000000000001")
LOG_CHECKSUM = 0x7FE6CC2E
LOG_SEQUENCE = 1
LOG_FLUSHED = LOG_LAST = 5 * MiB
LOG_TARGET = 3 * MiB  # the BAT sector at file offset 3 MiB
LOG_SECTOR_FIRST_U64 = 0x400006  # block 0 -> 4 MiB, FULLY_PRESENT
LOG_ENTRY_BYTES = dump(
    """
    0000 6c 6f 67 65 2e cc e6 7f 00 20 00 00 00 00 00 00
    0010 01 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00
    0020 d4 c3 b2 a1 00 00 00 40 80 00 00 00 00 00 00 01
    0030 00 00 50 00 00 00 00 00 00 00 50 00 00 00 00 00
    0040 64 65 73 63 00 00 00 00 06 00 40 00 00 00 00 00
    0050 00 00 30 00 00 00 00 00 01 00 00 00 00 00 00 00
    1000 64 61 74 61 00 00 00 00
    1ffc 01 00 00 00
    """,
    8 * KiB,
)

# --- section 2: CRC-32C ------------------------------------------------------------------------------
CRC32C_VECTORS = [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (b"", 0x00000000),
]

# --- section 0: GUID layout -----------------------------------------------------------------------------
GUID_EXAMPLE = (uuid.UUID("01234567-89ab-cdef-0123-456789abcdef"), bytes.fromhex("67452301ab89efcd0123456789abcdef"))
# section 0.1: (text, on-disk bytes)
KNOWN_GUIDS = {
    "BAT_REGION_GUID": ("2DC27766-F623-4200-9D64-115E9BFD4A08", "66 77 c2 2d 23 f6 00 42 9d 64 11 5e 9b fd 4a 08"),
    "METADATA_REGION_GUID": ("8B7CA206-4790-4B9A-B8FE-575F050F886E", "06 a2 7c 8b 90 47 9a 4b b8 fe 57 5f 05 0f 88 6e"),
    "FILE_PARAMETERS_GUID": ("CAA16737-FA36-4D43-B3B6-33F0AA44E76B", "37 67 a1 ca 36 fa 43 4d b3 b6 33 f0 aa 44 e7 6b"),
    "VIRTUAL_DISK_SIZE_GUID": ("2FA54224-CD1B-4876-B211-5DBED83BF4B8", "24 42 a5 2f 1b cd 76 48 b2 11 5d be d8 3b f4 b8"),
    "VIRTUAL_DISK_ID_GUID": ("BECA12AB-B2E6-4523-93EF-C309E000C746", "ab 12 ca be e6 b2 23 45 93 ef c3 09 e0 00 c7 46"),
    "LOGICAL_SECTOR_SIZE_GUID": ("8141BF1D-A96F-4709-BA47-F233A8FAAB5F", "1d bf 41 81 6f a9 09 47 ba 47 f2 33 a8 fa ab 5f"),
    "PHYSICAL_SECTOR_SIZE_GUID": ("CDA348C7-445D-4471-9CC9-E9885251C556", "c7 48 a3 cd 5d 44 71 44 9c c9 e9 88 52 51 c5 56"),
    "PARENT_LOCATOR_GUID": ("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C", "2d 5f d3 a8 0b b3 4d 45 ab f7 d3 d8 48 34 ab 0c"),
    "VHDX_PARENT_LOCATOR_TYPE_GUID": ("B04AEFB7-D19E-4A81-B789-25B8E9445913",
                                      "b7 ef 4a b0 9e d1 81 4a b7 89 25 b8 e9 44 59 13"),
}
# section 0.2
SIGNATURES = {
    "FILE_IDENTIFIER_SIGNATURE": (b"vhdxfile", 0x656C696678646876),
    "HEADER_SIGNATURE": (b"head", 0x64616568),
    "REGION_TABLE_SIGNATURE": (b"regi", 0x69676572),
    "METADATA_SIGNATURE": (b"metadata", 0x617461646174656D),
    "LOG_ENTRY_SIGNATURE": (b"loge", 0x65676F6C),
    "LOG_ZERO_DESCRIPTOR_SIGNATURE": (b"zero", 0x6F72657A),
    "LOG_DATA_DESCRIPTOR_SIGNATURE": (b"desc", 0x63736564),
    "LOG_DATA_SECTOR_SIGNATURE": (b"data", 0x61746164),
}

# section 8.1: "a FULLY_PRESENT block at file offset 0x12300000 is the entry 0x0000000012300006,
# stored as the bytes 06 00 30 12 00 00 00 00".
BAT_EXAMPLE = (6, 0x12300000, 0x0000000012300006, bytes.fromhex("0600301200000000"))
