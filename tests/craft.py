"""Crafting and damaging VHDX images for tests.

Start from a small valid image (``qemu_image`` makes one with qemu-img/qemu-io; the shared
fixtures work too), read where its structures lie with ``read_layout``, then change exactly one
thing. Structures that carry a checksum (headers, region tables, log entries) are rewritten with
the library's own builders, so the checksum stays valid and the damage reaches the layer under
test instead of being stopped by the CRC check:

    layout = read_layout(path)
    rewrite_headers(path, version=2)                     # both slots, valid CRCs, new one current
    rewrite_region_tables(path, [*layout.region_table.entries, extra_entry])
    rewrite_metadata(path, metadata_items(layout, block_size=3 * MiB))
    set_bat_entry(path, layout.payload_entry_offset(5), PayloadBlockState.PARTIALLY_PRESENT, 0)
    make_differencing(child, parent)                     # HasParent + a parent locator item

Raw byte helpers (``patch``, ``flip_byte``, ``truncated_copy``) are for damage that is meant to
be caught by a checksum or a length check. ``unchanged(path)`` asserts a block of code leaves a
file byte-identical (opening must never write).

Everything here writes only to the files it is given; never point it at the shared fixtures
(copy them first with ``helpers.copy_to``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from helpers import file_digest, require_tool, run
from vhdx import checksum
from vhdx.constants import (
    BAT_ENTRY_SIZE,
    BAT_STATE_MASK,
    FILE_PARAMETERS_HAS_PARENT,
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    HEADER_SIZE,
    METADATA_TABLE_SIZE,
    PARENT_KEY_LINKAGE,
    PARENT_KEY_RELATIVE_PATH,
    PARENT_LOCATOR_GUID,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    REGION_TABLE_SIZE,
    MiB,
)
from vhdx.errors import FormatError
from vhdx.model.bat import PRESENT_STATES
from vhdx.model.geometry import DiskGeometry
from vhdx.model.header import Header, HeaderChoice, build_header, next_header, select_current
from vhdx.model.metadata import (
    Metadata,
    MetadataEntry,
    MetadataItem,
    build_metadata_region,
    decode_metadata,
    known_entries,
    parse_metadata_table,
    system_items,
)
from vhdx.model.parent_locator import build_parent_locator
from vhdx.model.region_table import RegionTable, RegionTableEntry, build_region_table, parse_region_table
from vhdx.structs import bat as bat_struct
from vhdx.structs.header import HEADER_CHECKSUM_OFFSET
from vhdx.structs.region_table import REGION_TABLE_CHECKSUM_OFFSET

HEADER_SLOTS = (HEADER_1_OFFSET, HEADER_2_OFFSET)
REGION_TABLE_SLOTS = (REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET)


# --- making images ------------------------------------------------------------------------------


def qemu_image(
    folder: Path,
    name: str = "base.vhdx",
    size: int = 64 * MiB,
    *,
    block_size: int = MiB,
    subformat: str = "dynamic",
    log_size: int = MiB,
    block_state_zero: bool = False,
    writes: Sequence[tuple[int, int, int]] = (),
) -> Path:
    """Create ``folder/name`` with qemu-img and apply ``writes`` (offset, length, byte) with qemu-io.

    ``block_state_zero`` is off by default so that unwritten blocks are NOT_PRESENT (QEMU's default
    marks them ZERO, which would hide a parent when the image is turned into a differencing child).
    Skips the test (or fails it when VHDX_REQUIRE_INTEROP is set) without qemu-img/qemu-io.
    """
    require_tool("qemu-img", "qemu-io")
    path = folder / name
    opts = f"subformat={subformat},block_size={block_size},log_size={log_size}," \
           f"block_state_zero={'on' if block_state_zero else 'off'}"
    run("qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, str(path), str(size))
    if writes:
        args = []
        for offset, length, byte in writes:
            args += ["-c", f"write -P {byte:#x} {offset} {length}"]
        run("qemu-io", "-f", "vhdx", *args, str(path))
    return path


def truncated_copy(src: Path, dst: Path, size: int) -> Path:
    """Write the first ``size`` bytes of ``src`` to ``dst`` (cheaper than copy + truncate)."""
    with open(src, "rb") as f, open(dst, "wb") as out:
        remaining = size
        while remaining > 0:
            chunk = f.read(min(remaining, MiB))
            if not chunk:
                break
            out.write(chunk)
            remaining -= len(chunk)
    return dst


# --- where things are ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the structures of a (valid) image lie, decoded with the library's model layer."""

    path: Path
    file_size: int
    headers: HeaderChoice
    region_table: RegionTable
    metadata_entries: tuple[MetadataEntry, ...]
    metadata: Metadata
    geometry: DiskGeometry
    bat: npt.NDArray[np.uint64]

    @property
    def header(self) -> Header:
        return self.headers.current

    @property
    def log_offset(self) -> int:
        return self.header.log_offset

    @property
    def log_length(self) -> int:
        return self.header.log_length

    @property
    def bat_offset(self) -> int:
        return self.region_table.bat.file_offset

    @property
    def bat_length(self) -> int:
        return self.region_table.bat.length

    @property
    def metadata_offset(self) -> int:
        return self.region_table.metadata.file_offset

    @property
    def metadata_length(self) -> int:
        return self.region_table.metadata.length

    def payload_entry_offset(self, block: int) -> int:
        """File offset of the BAT entry of payload block ``block``."""
        return self.bat_offset + self.geometry.payload_bat_index(block) * BAT_ENTRY_SIZE

    def bitmap_entry_offset(self, chunk: int) -> int:
        """File offset of the BAT entry of the sector bitmap block of ``chunk``."""
        return self.bat_offset + self.geometry.bitmap_bat_index(chunk) * BAT_ENTRY_SIZE

    def block_file_offset(self, block: int) -> int:
        """File offset of payload block ``block`` (0 when it has no storage)."""
        return int(bat_struct.file_offsets(self.bat[[self.geometry.payload_bat_index(block)]])[0])

    def present_blocks(self) -> list[tuple[int, int]]:
        """(block, file offset) of every block with storage, in file order."""
        g = self.geometry
        out = []
        for block in range(g.payload_block_count):
            entry = self.bat[g.payload_bat_index(block)]
            if int(entry) & BAT_STATE_MASK in PRESENT_STATES:
                out.append((block, self.block_file_offset(block)))
        return sorted(out, key=lambda p: p[1])

    def item_offset(self, item_id: uuid.UUID) -> int:
        """File offset of a system metadata item."""
        return self.metadata_offset + known_entries(self.metadata_entries)[item_id].offset


def _read(f: object, offset: int, length: int) -> bytes:
    f.seek(offset)  # type: ignore[attr-defined]
    return f.read(length)  # type: ignore[attr-defined,no-any-return]


def read_layout(path: Path) -> Layout:
    """Decode the headers, region table 1, metadata and BAT of a valid image at ``path``.

    Uses the model layer only (not ``vhdx.open``), so it also works on an image whose damage is
    in a part it does not read (the log, payload, region table 2).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        headers = select_current(_read(f, HEADER_1_OFFSET, HEADER_SIZE), _read(f, HEADER_2_OFFSET, HEADER_SIZE))
        try:
            table = parse_region_table(_read(f, REGION_TABLE_1_OFFSET, REGION_TABLE_SIZE), REGION_TABLE_1_OFFSET)
        except FormatError:  # copy 1 damaged on purpose: the reader falls back to copy 2 too
            table = parse_region_table(_read(f, REGION_TABLE_2_OFFSET, REGION_TABLE_SIZE), REGION_TABLE_2_OFFSET)
        meta = table.metadata
        entries = parse_metadata_table(_read(f, meta.file_offset, METADATA_TABLE_SIZE), meta.file_offset, meta.length)
        values = {guid: _read(f, meta.file_offset + e.offset, e.length) for guid, e in known_entries(entries).items()}
        metadata = decode_metadata(entries, values, meta.file_offset)
        geometry = metadata.geometry()
        count = min(geometry.bat_entry_count_full, table.bat.length // BAT_ENTRY_SIZE)
        bat = bat_struct.parse(_read(f, table.bat.file_offset, count * BAT_ENTRY_SIZE))
    return Layout(Path(path), size, headers, table, entries, metadata, geometry, bat)


# --- raw damage ---------------------------------------------------------------------------------


def patch(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes at ``offset`` in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def read_bytes(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        return _read(f, offset, length)


def flip_byte(path: Path, offset: int, mask: int = 0xFF) -> None:
    """XOR the byte at ``offset`` with ``mask`` (damage a checksummed structure)."""
    (old,) = read_bytes(path, offset, 1)
    patch(path, offset, bytes([old ^ mask]))


@contextlib.contextmanager
def unchanged(*paths: Path) -> Iterator[None]:
    """Assert that the files are byte-identical after the block (opening must never write)."""
    before = [file_digest(p) for p in paths]
    yield
    after = [file_digest(p) for p in paths]
    for p, b, a in zip(paths, before, after):
        assert a == b, f"{p} was modified"


# --- checksummed structures, rewritten validly ---------------------------------------------------


def write_header(path: Path, slot: int, header: Header) -> None:
    """Write ``header`` (checksum computed) into slot 1 or 2."""
    patch(path, HEADER_SLOTS[slot - 1], build_header(header))


def rewrite_headers(path: Path, **changes: object) -> Header:
    """Apply ``changes`` to the current header and write it to both slots, the way a writer does
    (MS-VHDX 2.2.2.1): the non-current slot gets sequence + 1, then the other slot sequence + 2.
    Returns the header that is now current."""
    choice = read_layout_headers(path)
    first = next_header(choice.current, **changes)
    second = next_header(first)
    write_header(path, 2 - choice.current_index, first)  # the non-current slot
    write_header(path, choice.current_index + 1, second)
    return second


def read_layout_headers(path: Path) -> HeaderChoice:
    with open(path, "rb") as f:
        return select_current(_read(f, HEADER_1_OFFSET, HEADER_SIZE), _read(f, HEADER_2_OFFSET, HEADER_SIZE))


def patch_header_bytes(path: Path, slot: int, mutate: Callable[[bytearray], None], *, reseal: bool = True) -> None:
    """Change the raw 4 KiB of header ``slot`` with ``mutate`` and (by default) recompute its CRC."""
    offset = HEADER_SLOTS[slot - 1]
    buf = bytearray(read_bytes(path, offset, HEADER_SIZE))
    mutate(buf)
    if reseal:
        checksum.seal(buf, HEADER_CHECKSUM_OFFSET)
    patch(path, offset, bytes(buf))


def rewrite_region_tables(path: Path, entries: Sequence[RegionTableEntry], slots: Sequence[int] = (1, 2)) -> None:
    """Write a region table holding ``entries`` (checksum computed) into the given slots."""
    raw = build_region_table(RegionTable(tuple(entries)))
    for slot in slots:
        patch(path, REGION_TABLE_SLOTS[slot - 1], raw)


def patch_region_table_bytes(path: Path, mutate: Callable[[bytearray], None], slots: Sequence[int] = (1, 2),
                             *, reseal: bool = True) -> None:
    """Change the raw 64 KiB of the region table copies with ``mutate`` and recompute their CRC."""
    for slot in slots:
        offset = REGION_TABLE_SLOTS[slot - 1]
        buf = bytearray(read_bytes(path, offset, REGION_TABLE_SIZE))
        mutate(buf)
        if reseal:
            checksum.seal(buf, REGION_TABLE_CHECKSUM_OFFSET)
        patch(path, offset, bytes(buf))


def region_entry(guid: uuid.UUID, file_offset: int, length: int, required: bool = True) -> RegionTableEntry:
    return RegionTableEntry(guid, file_offset, length, required)


# --- metadata (no checksum; the log protects it) -------------------------------------------------


def metadata_items(layout: Layout, locator: bytes | None = None, **changes: object) -> list[MetadataItem]:
    """The five system items of ``layout`` (QEMU's order), with ``changes`` applied to the decoded
    values (``block_size=...``, ``virtual_disk_size=...``, ``file_parameter_flags=...``, ...),
    plus a parent locator item when ``locator`` is given. Values are not validated, so invalid
    ones can be written."""
    meta = dataclasses.replace(layout.metadata, **changes)  # type: ignore[arg-type]
    return system_items(meta, locator)


def rewrite_metadata(path: Path, items: Sequence[MetadataItem], layout: Layout | None = None) -> None:
    """Replace the metadata region of ``path`` with ``items`` laid out from offset 64 KiB."""
    layout = layout or read_layout(path)
    patch(path, layout.metadata_offset, build_metadata_region(list(items), layout.metadata_length))


# --- BAT --------------------------------------------------------------------------------------------


def set_bat_entry(path: Path, entry_offset: int, state: int, file_offset: int) -> None:
    """Write one BAT entry (``state`` at byte ``file_offset``) at file offset ``entry_offset``."""
    value = bat_struct.make_entry(state, file_offset)
    patch(path, entry_offset, int(value).to_bytes(BAT_ENTRY_SIZE, "little"))


def set_raw_bat_entry(path: Path, entry_offset: int, value: int) -> None:
    patch(path, entry_offset, value.to_bytes(BAT_ENTRY_SIZE, "little"))


# --- the log ------------------------------------------------------------------------------------------


def write_log_entries(path: Path, entries: Sequence[tuple[int, bytes]], log_guid: uuid.UUID) -> Header:
    """Write entry bytes at the given offsets inside the log (wrapping around its end), then set
    ``log_guid`` in both headers so the entries are considered. Returns the current header."""
    layout = read_layout(path)
    base, length = layout.log_offset, layout.log_length
    for log_offset, raw in entries:
        first = min(len(raw), length - log_offset)
        patch(path, base + log_offset, raw[:first])
        if first < len(raw):
            patch(path, base, raw[first:])
    return rewrite_headers(path, log_guid=log_guid)


# --- differencing ------------------------------------------------------------------------------------


def windows_relative(child: Path, parent: Path) -> str:
    """``relative_path`` as Windows writes it: backslashes, ``.\\`` for the child's own folder."""
    rel = os.path.relpath(parent, child.parent)
    rel = rel.replace(os.sep, "\\")
    return rel if rel.startswith("..") else ".\\" + rel


def locator_entries(parent: Path | None, child: Path, *, linkage: str | None = None,
                    relative_path: str | None = None, extra: Sequence[tuple[str, str]] = ()) -> list[tuple[str, str]]:
    """Key/value entries of a VHDX parent locator for ``child`` -> ``parent``.

    ``linkage`` defaults to the parent's current DataWriteGuid in braces; ``relative_path`` to
    the Windows-style path from the child's folder to ``parent``.
    """
    if linkage is None:
        assert parent is not None
        linkage = "{" + str(read_layout_headers(parent).current.data_write_guid) + "}"
    if relative_path is None:
        assert parent is not None
        relative_path = windows_relative(child, parent)
    return [(PARENT_KEY_LINKAGE, linkage), (PARENT_KEY_RELATIVE_PATH, relative_path), *extra]


def make_differencing(
    child: Path,
    parent: Path | None,
    *,
    linkage: str | None = None,
    relative_path: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    locator: bytes | None = None,
) -> int:
    """Turn the dynamic image ``child`` into a differencing child of ``parent``.

    Sets HasParent in File Parameters, copies the parent's Virtual Disk ID (the fork rule,
    VHDX-FORMAT.md 7.2) and adds a parent locator item. ``child`` must have the parent's virtual
    size and sector size, and blocks that should come from the parent must be NOT_PRESENT
    (``qemu_image(..., block_state_zero=False)``). Pass ``locator`` to store raw (even invalid)
    locator bytes. Returns the file offset of the parent locator item, for further damage.
    """
    layout = read_layout(child)
    changes: dict[str, object] = {"file_parameter_flags": FILE_PARAMETERS_HAS_PARENT}
    if parent is not None:
        changes["virtual_disk_id"] = read_layout(parent).metadata.virtual_disk_id
    if locator is None:
        locator = build_parent_locator(locator_entries(parent, child, linkage=linkage, relative_path=relative_path,
                                                       extra=extra))
    rewrite_metadata(child, metadata_items(layout, locator, **changes), layout)
    # Only the table is parsed here (not the locator itself, which may be broken on purpose).
    table = parse_metadata_table(read_bytes(child, layout.metadata_offset, METADATA_TABLE_SIZE),
                                 layout.metadata_offset, layout.metadata_length)
    return layout.metadata_offset + known_entries(table)[PARENT_LOCATOR_GUID].offset
