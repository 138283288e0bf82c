"""Seed images for the fuzzers, and where each of their structures lies.

Every seed is a small valid image made at test time with the library itself (no external tool),
so the fuzzers run everywhere. ``build_corpus(folder)`` writes them and returns one ``Seed`` per
kind, each listing the byte ranges of its on-disk structures (``Structure``), so mutations land
where parsing decisions are made instead of in payload bytes nobody interprets:

==================  ==============================================================================
seed                what it exercises
==================  ==============================================================================
``dynamic``         8 MiB dynamic, 1 MiB blocks: FULLY_PRESENT, ZERO and NOT_PRESENT blocks
``fixed``           4 MiB fixed (LeaveBlockAllocated), every block present
``differencing``    child of ``parent.vhdx`` with PARTIALLY_PRESENT blocks, a sector bitmap block
                    and a parent locator (the parent lies next to it, as the locator says)
``chain_parent``    the same chain, but the *parent* is the file that gets mutated (reached
                    through the valid child)
``sector4k``        8 MiB dynamic with 4096-byte logical sectors (chunk ratio 32768)
``dirty_log``       a dynamic image caught after its log entry was made durable and before the
                    entry was applied in place (built from a RecordingFile, as the crash tests
                    do): opening it replays the log
==================  ==============================================================================

Structures that carry a CRC-32C (headers, region tables, log entries) say where the checksum is,
so a mutation can be resealed and reach the checks behind the CRC (VHDX-FORMAT.md 2).

References: MS-VHDX 2.2-2.6; VHDX-FORMAT.md 1-10.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import vhdx
from crash.recording import Barrier, RecordingFile, Write, _apply
from vhdx import checksum
from vhdx.constants import (
    BAT_ENTRY_SIZE,
    BAT_FILE_OFFSET_MASK,
    BAT_STATE_MASK,
    PARENT_LOCATOR_GUID,
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    HEADER_SIZE,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    REGION_TABLE_SIZE,
    SectorBitmapState,
    MiB,
)
from vhdx.model.log import scan_log
from vhdx.structs.header import HEADER_CHECKSUM_OFFSET
from vhdx.structs.log import LOG_ENTRY_CHECKSUM_OFFSET
from vhdx.structs.metadata import (
    METADATA_TABLE_ENTRY_SIZE,
    METADATA_TABLE_HEADER_SIZE,
    PARENT_LOCATOR_ENTRY_SIZE,
    PARENT_LOCATOR_HEADER_SIZE,
)
from vhdx.structs.region_table import REGION_TABLE_CHECKSUM_OFFSET, REGION_TABLE_ENTRY_SIZE, REGION_TABLE_HEADER_SIZE

from craft import read_layout  # tests/ is on sys.path (conftest, or the atheris harness)

SEED_NAMES = ("dynamic", "fixed", "differencing", "chain_parent", "sector4k", "dirty_log")
PARENT_NAME = "parent.vhdx"
CHILD_NAME = "child.avhdx"


@dataclass(frozen=True)
class Structure:
    """One structure of a seed: its byte range, and how to recompute its checksum if it has one.

    Attributes:
        name: what it is (``"header 1"``, ``"BAT payload entries"``, ...).
        start, end: the byte range mutations aim at.
        seal: (start, length, checksum offset inside it) of the checksummed span, or None.
        width: the natural field width, for "set a field to an extreme value" mutations.
    """

    name: str
    start: int
    end: int
    seal: tuple[int, int, int] | None = None
    width: int = 4


class Seed:
    """A valid seed image and the structures inside it.

    ``data`` is the file to mutate; ``target`` the name it is written under (in a folder holding
    ``companions``: other files, by name, that must lie next to it, e.g. the parent); ``opens`` is
    the name of the file the read surface opens (the child, for ``chain_parent``). A plain class,
    not a dataclass: hypothesis prints a failing example's arguments, and would print a
    dataclass field by field, megabytes of image included.
    """

    def __init__(self, name: str, data: bytes, structures: list[Structure], *, target: str = "image.vhdx",
                 opens: str = "image.vhdx", companions: dict[str, bytes] | None = None) -> None:
        self.name = name
        self.data = data
        self.structures = structures
        self.target = target
        self.opens = opens
        self.companions = companions or {}

    def __repr__(self) -> str:  # hypothesis prints fixtures with a failing example: keep it short
        return f"<Seed {self.name} ({len(self.data)} bytes, {len(self.structures)} structures)>"

    def place(self, folder: Path, data: bytes | bytearray) -> Path:
        """Write the (mutated) ``data`` and the companions into ``folder``; return what to open."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.companions.items():
            path = folder / name
            if not path.exists() or path.stat().st_size != len(content):
                path.write_bytes(content)
        (folder / self.target).write_bytes(data)
        return folder / self.opens


def reseal(buf: bytearray, seal: tuple[int, int, int]) -> None:
    """Recompute the CRC-32C of the span described by ``seal`` inside ``buf`` (when it fits)."""
    start, length, at = seal
    if start + length <= len(buf):
        span = bytearray(buf[start : start + length])
        checksum.seal(span, at)
        buf[start : start + length] = span


def structures_of(path: Path) -> list[Structure]:
    """Where the structures of the valid image at ``path`` lie (decoded with the model layer)."""
    layout = read_layout(path)
    out = [Structure("file identifier", 0, 8 + 2 * 256, None, 2)]
    for i, slot in enumerate((HEADER_1_OFFSET, HEADER_2_OFFSET), start=1):
        # The fields sit in the first 80 bytes; the rest of the 4 KiB is reserved but checksummed.
        out.append(Structure(f"header {i}", slot, slot + 80, (slot, HEADER_SIZE, HEADER_CHECKSUM_OFFSET), 8))
    count = len(layout.region_table.entries)
    for i, slot in enumerate((REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET), start=1):
        end = slot + REGION_TABLE_HEADER_SIZE + (count + 1) * REGION_TABLE_ENTRY_SIZE
        out.append(Structure(f"region table {i}", slot, end, (slot, REGION_TABLE_SIZE, REGION_TABLE_CHECKSUM_OFFSET), 8))
    meta = layout.metadata_offset
    entries = layout.metadata_entries
    out.append(Structure("metadata table", meta,
                         meta + METADATA_TABLE_HEADER_SIZE + (len(entries) + 1) * METADATA_TABLE_ENTRY_SIZE, None, 4))
    for e in entries:
        if not e.length:
            continue
        name = "parent locator" if e.item_id == PARENT_LOCATOR_GUID else f"metadata item {e.item_id}"
        start = meta + e.offset
        if name == "parent locator":
            # The header and key/value table carry the counts and offsets; the strings follow.
            table = PARENT_LOCATOR_HEADER_SIZE + 8 * PARENT_LOCATOR_ENTRY_SIZE
            out.append(Structure("parent locator table", start, start + min(e.length, table), None, 2))
        out.append(Structure(name, start, start + e.length, None, 4))
    g = layout.geometry
    bat = layout.bat_offset
    last_payload = g.payload_bat_index(g.payload_block_count - 1)
    out.append(Structure("BAT payload entries", bat, bat + (last_payload + 1) * BAT_ENTRY_SIZE, None, 8))
    for k in range(g.sector_bitmap_block_count):
        at = layout.bitmap_entry_offset(k)
        out.append(Structure(f"BAT sector bitmap entry {k}", at, at + BAT_ENTRY_SIZE, None, 8))
        entry = int(layout.bat[g.bitmap_bat_index(k)]) if g.bitmap_bat_index(k) < len(layout.bat) else 0
        if entry & BAT_STATE_MASK == SectorBitmapState.PRESENT:
            sb = entry & BAT_FILE_OFFSET_MASK
            used = g.payload_block_count * g.sectors_per_block // 8
            out.append(Structure(f"sector bitmap {k}", sb, sb + max(used, 8), None, 1))
    header = layout.header
    if not header.log_is_empty:
        with open(path, "rb") as f:
            f.seek(header.log_offset)
            log = f.read(header.log_length)
        scan = scan_log(log, header.log_guid, header.log_offset)
        for entry in scan.entries.values():
            start = header.log_offset + entry.log_offset
            out.append(Structure(f"log entry at 0x{entry.log_offset:x}", start, start + min(entry.length, 4096),
                                 (start, entry.length, LOG_ENTRY_CHECKSUM_OFFSET), 8))
            # The data sectors: signature and sequence halves at both ends of each.
            out.append(Structure(f"log data of entry 0x{entry.log_offset:x}", start + 4096, start + entry.length,
                                 (start, entry.length, LOG_ENTRY_CHECKSUM_OFFSET), 4))
    return out


def _dynamic(path: Path, **kwargs: object) -> None:
    with vhdx.create(path, 8 * MiB, block_size=MiB, overwrite=True, **kwargs) as d:  # type: ignore[arg-type]
        d.pwrite(0, b"\x11" * 5000)
        d.pwrite(3 * MiB + 4096, b"\x22" * 8192)
        d.pwrite(5 * MiB, b"\x33" * MiB)
        d.write_zeroes(6 * MiB, MiB)  # a ZERO block
        d.pwrite(8 * MiB - 512, b"\x44" * 512)


def _dirty_log(folder: Path) -> bytes:
    """A dynamic image whose log holds an entry not yet applied in place: the state right after
    the barrier that made the entry durable (VHDX-FORMAT.md 10.6 steps 3-4)."""
    base = folder / "dirty-base.vhdx"
    _dynamic(base)
    initial = base.read_bytes()
    header = read_layout(base).header
    rec = RecordingFile(initial, name=str(base))
    with vhdx.open(rec, "r+b") as disk:
        disk.pwrite(MiB + 100, b"\x55" * 3000)  # a new block: BAT change
        disk.pwrite(7 * MiB, b"\x66" * 4096)
        disk.write_zeroes(5 * MiB, MiB)  # present -> ZERO: another BAT change
        disk.flush()
        ops = list(rec.ops)
    log_lo, log_hi = header.log_offset, header.log_offset + header.log_length
    first_log = next(i for i, op in enumerate(ops) if isinstance(op, Write) and log_lo <= op.offset < log_hi)
    barrier = next(i for i in range(first_log, len(ops)) if isinstance(ops[i], Barrier))
    image = bytearray(initial)
    for op in ops[:barrier]:
        _apply(image, op)
    return bytes(image)


def build_corpus(folder: Path) -> dict[str, Seed]:
    """Create every seed under ``folder`` and return them by name (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds: dict[str, Seed] = {}

    path = folder / "dynamic.vhdx"
    _dynamic(path)
    seeds["dynamic"] = Seed("dynamic", path.read_bytes(), structures_of(path))

    path = folder / "fixed.vhdx"
    with vhdx.create(path, 4 * MiB, block_size=MiB, disk_type="fixed", overwrite=True) as d:
        d.pwrite(MiB - 100, b"\x77" * 300)
    seeds["fixed"] = Seed("fixed", path.read_bytes(), structures_of(path))

    path = folder / "sector4k.vhdx"
    _dynamic(path, logical_sector_size=4096)
    seeds["sector4k"] = Seed("sector4k", path.read_bytes(), structures_of(path))

    chain = folder / "chain"
    chain.mkdir(exist_ok=True)
    parent, child = chain / PARENT_NAME, chain / CHILD_NAME
    _dynamic(parent)
    vhdx.create(child, parent=parent, block_size=MiB, overwrite=True).close()
    with vhdx.open(child, "r+b") as d:
        d.pwrite(512, b"\x88" * 1024)  # PARTIALLY_PRESENT, parent's bytes around it
        d.pwrite(2 * MiB + 4096 * 3, b"\x99" * 512)
        d.pwrite(4 * MiB, b"\xaa" * MiB)  # FULLY_PRESENT
        d.write_zeroes(5 * MiB, MiB)  # ZERO hides the parent's block
    parent_bytes, child_bytes = parent.read_bytes(), child.read_bytes()
    seeds["differencing"] = Seed("differencing", child_bytes, structures_of(child), target=CHILD_NAME,
                                 opens=CHILD_NAME, companions={PARENT_NAME: parent_bytes})
    seeds["chain_parent"] = Seed("chain_parent", parent_bytes, structures_of(parent), target=PARENT_NAME,
                                 opens=CHILD_NAME, companions={CHILD_NAME: child_bytes})

    path = folder / "dirty_log.vhdx"
    path.write_bytes(_dirty_log(folder))
    seeds["dirty_log"] = Seed("dirty_log", path.read_bytes(), structures_of(path))
    return seeds


def copy_seed_files(seed: Seed, folder: Path) -> Path:
    """Place the unmutated seed in ``folder`` (a positive control); return the path to open."""
    return seed.place(folder, seed.data)


__all__ = ["CHILD_NAME", "PARENT_NAME", "SEED_NAMES", "Seed", "Structure", "build_corpus", "copy_seed_files", "reseal",
           "structures_of"]

