"""Header model: decoding, validation, choosing the current header, building the next one.

References: MS-VHDX 2.2.2, 2.2.2.1; VHDX-FORMAT.md 5.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from .. import checksum
from ..constants import (
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    HEADER_SECTION_SIZE,
    HEADER_SIZE,
    HEADER_VERSION,
    LOG_VERSION,
    OBJECT_ALIGNMENT,
)
from ..errors import ChecksumError, CorruptStructureError, FormatError, UnsupportedError
from ..structs.header import HEADER, HEADER_CHECKSUM_OFFSET
from ._decode import build_struct, parse_struct

ZERO_GUID = uuid.UUID(int=0)
HEADER_OFFSETS = (HEADER_1_OFFSET, HEADER_2_OFFSET)


@dataclass(frozen=True, slots=True)
class Header:
    """One decoded header."""

    sequence_number: int
    file_write_guid: uuid.UUID
    data_write_guid: uuid.UUID
    log_guid: uuid.UUID
    log_version: int
    version: int
    log_length: int
    log_offset: int
    checksum: int = 0

    @property
    def log_is_empty(self) -> bool:
        return self.log_guid == ZERO_GUID


def parse_header(raw: bytes | bytearray | memoryview, offset: int) -> Header:
    """Decode and checksum-verify the 4 KiB header stored at file ``offset``.

    Raises:
        SignatureError, TruncatedError, ChecksumError.
    """
    name = f"header {HEADER_OFFSETS.index(offset) + 1}" if offset in HEADER_OFFSETS else "header"
    c = parse_struct(HEADER, raw[:HEADER_SIZE], structure=name, offset=offset)
    if not checksum.verify(raw[:HEADER_SIZE], HEADER_CHECKSUM_OFFSET):
        raise ChecksumError(
            f"checksum mismatch (stored 0x{c.checksum:08x}, computed "
            f"0x{checksum.compute(raw[:HEADER_SIZE], HEADER_CHECKSUM_OFFSET):08x})",
            structure=name,
            offset=offset,
        )
    return Header(
        sequence_number=c.sequence_number,
        file_write_guid=c.file_write_guid,
        data_write_guid=c.data_write_guid,
        log_guid=c.log_guid,
        log_version=c.log_version,
        version=c.version,
        log_length=c.log_length,
        log_offset=c.log_offset,
        checksum=c.checksum,
    )


def build_header(header: Header) -> bytes:
    """Return the 4 KiB on-disk form of ``header`` with its checksum computed."""
    fields = dataclasses.asdict(header)
    fields["checksum"] = 0
    buf = bytearray(build_struct(HEADER, fields))
    checksum.seal(buf, HEADER_CHECKSUM_OFFSET)
    return bytes(buf)


@dataclass(frozen=True, slots=True)
class HeaderChoice:
    """The outcome of choosing between the two headers."""

    current: Header
    current_index: int  # 0 for header 1, 1 for header 2
    headers: tuple[Header | None, Header | None]
    problems: tuple[FormatError, ...]  # why a header was not usable (reported by check/info)


def select_current(raw1: bytes, raw2: bytes) -> HeaderChoice:
    """Choose the current header (VHDX-FORMAT.md 5.2) and validate it.

    A valid header has its signature and checksum. With two valid headers the larger
    SequenceNumber wins; equal numbers are accepted only when both 4 KiB structures are
    byte-identical (Sysinternals Disk2VHD writes such files; QEMU accepts them).

    Raises:
        FormatError: neither header is valid, or equal sequence numbers with different contents.
        UnsupportedError: Version is not 1, or LogVersion is not 0 with a non-empty log.
        CorruptStructureError: the current header's log placement is invalid.
    """
    parsed: list[Header | None] = []
    problems: list[FormatError] = []
    for raw, offset in ((raw1, HEADER_1_OFFSET), (raw2, HEADER_2_OFFSET)):
        try:
            parsed.append(parse_header(raw, offset))
        except FormatError as err:
            parsed.append(None)
            problems.append(err)
    h1, h2 = parsed
    if h1 is None and h2 is None:
        first = problems[0]
        raise type(first)(
            f"no valid header: header 1: {problems[0].message}; header 2: {problems[1].message}",
            structure="headers",
            offset=HEADER_1_OFFSET,
        )
    if h1 is not None and h2 is not None:
        if h1.sequence_number == h2.sequence_number:
            if raw1[:HEADER_SIZE] != raw2[:HEADER_SIZE]:
                raise CorruptStructureError(
                    f"both headers carry sequence number {h1.sequence_number} but differ",
                    structure="headers",
                    offset=HEADER_1_OFFSET,
                )
            index = 0
        else:
            index = 0 if h1.sequence_number > h2.sequence_number else 1
    else:
        index = 0 if h1 is not None else 1
    current = parsed[index]
    assert current is not None
    validate_header(current, HEADER_OFFSETS[index])
    return HeaderChoice(current=current, current_index=index, headers=(h1, h2), problems=tuple(problems))


def validate_header(header: Header, offset: int) -> None:
    """Check the rules that apply to the current header (VHDX-FORMAT.md 5.2 step 4)."""
    name = f"header {HEADER_OFFSETS.index(offset) + 1}" if offset in HEADER_OFFSETS else "header"
    if header.version != HEADER_VERSION:
        raise UnsupportedError(f"header version {header.version} (only {HEADER_VERSION} is defined)",
                               structure=name, offset=offset)
    if header.log_version != LOG_VERSION and not header.log_is_empty:
        raise UnsupportedError(f"log version {header.log_version} (only {LOG_VERSION} is defined)",
                               structure=name, offset=offset)
    if header.log_offset % OBJECT_ALIGNMENT or header.log_length % OBJECT_ALIGNMENT:
        raise CorruptStructureError(
            f"log at 0x{header.log_offset:x} length 0x{header.log_length:x} is not 1 MiB aligned",
            structure=name, offset=offset)
    if header.log_length == 0 and not header.log_is_empty:
        raise CorruptStructureError("log GUID is set but the log length is zero", structure=name, offset=offset)
    if header.log_length and header.log_offset < HEADER_SECTION_SIZE:
        raise CorruptStructureError(f"log at 0x{header.log_offset:x} overlaps the header section",
                                    structure=name, offset=offset)


def next_header(current: Header, **changes: object) -> Header:
    """Return the header that follows ``current``: every field copied, sequence number + 1,
    ``changes`` applied (MS-VHDX 2.2.2.1)."""
    return dataclasses.replace(current, sequence_number=current.sequence_number + 1, checksum=0, **changes)  # type: ignore[arg-type]
