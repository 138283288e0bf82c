"""What a VHDX file holds beyond its visible disk: space no BAT entry references (left by
compaction, trims, resizes, crashed allocations), slack after the last structure, non-zero bytes
in reserved areas, and every log entry still in the log region (a history of metadata writes).

Everything here opens the file read-only and never writes it. Structures are read as a
read-only open sees them (a pending log replayed in memory); bytes reported as hidden are the
file's own.

References: MS-VHDX 2.2 (reserved fields), 2.3 (log), 2.5 (BAT); VHDX-FORMAT.md 1, 8, 10.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..constants import (
    BAT_ENTRY_SIZE,
    BAT_FILE_OFFSET_MASK,
    BAT_STATE_MASK,
    CREATOR_SIZE,
    FILE_IDENTIFIER_SIGNATURE,
    FILE_IDENTIFIER_SIZE,
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    HEADER_SECTION_SIZE,
    HEADER_SIZE,
    HEADER_SLOT_SIZE,
    LOG_SECTOR_SIZE,
    METADATA_TABLE_SIZE,
    MiB,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    REGION_TABLE_SIZE,
    SECTOR_BITMAP_BLOCK_SIZE,
    PayloadBlockState,
    SectorBitmapState,
)
from ..disk import open_engine
from ..engine.buffers import io_buffer
from ..engine.engine import BlockEngine
from ..engine.source import RandomAccess
from ..model.log import DataWrite, LogEntry, all_entries
from ..structs.header import HEADER_FIELDS
from ..structs.metadata import METADATA_TABLE_ENTRY_SIZE, METADATA_TABLE_HEADER_SIZE
from ..structs.region_table import REGION_TABLE_ENTRY_SIZE, REGION_TABLE_HEADER_SIZE
from .result import OperationResult

SCAN_CHUNK = 8 * MiB  # bytes read at a time when looking for non-zero data
MAX_REGIONS = 100_000  # regions listed before the rest are summarised (hostile files)
STATE_NAMES = {s.value: s.name for s in PayloadBlockState}


# --- hidden data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HiddenRegion(OperationResult):
    file_offset: int
    length: int
    kind: str  # "unreferenced", "released", "slack" or "reserved"
    structure: str  # what the space is: "free space", "block released by BAT entry 12", "header 1 reserved", ...
    nonzero: bool
    nonzero_bytes: int
    first_nonzero: int | None  # file offset of the first non-zero byte
    dumped: str | None = None  # where the bytes were written (recover --out)


@dataclass(frozen=True)
class RecoverResult(OperationResult):
    image: str
    file_size: int
    regions: tuple[HiddenRegion, ...]
    bytes_unreferenced: int
    bytes_nonzero: int
    truncated: bool  # more than MAX_REGIONS regions: the rest were not listed
    seconds: float


def find_hidden(path: str | os.PathLike[str], *, out_dir: str | os.PathLike[str] | None = None,
                include_zero: bool = True) -> RecoverResult:
    """List the file ranges no structure references, and reserved areas holding non-zero bytes.

    Free space is cut into pieces of one payload block (aligned to 1 MiB, as blocks are), since
    that is how it was used. ``out_dir``: write each region holding non-zero bytes there as
    ``<kind>-<offset>.bin``. ``include_zero=False`` lists only regions with non-zero bytes.
    """
    t0 = time.perf_counter()
    engine = open_engine(path, require_parent=False)
    try:
        raw = engine.image.raw_source
        size = raw.size()
        starts, ends, released = _referenced(engine)
        regions: list[HiddenRegion] = []
        truncated = False
        unreferenced = nonzero_total = 0
        end_of_structures = int(ends.max())  # the header section is always there
        for start, end, kind, what in _gaps(_holes(starts, ends, size), released, engine.block_size,
                                            end_of_structures):
            count, first = _nonzero(raw, start, end)
            unreferenced += end - start
            nonzero_total += count
            if not count and not include_zero:
                continue
            if len(regions) >= MAX_REGIONS:
                truncated = True
                continue
            regions.append(HiddenRegion(start, end - start, kind, what, bool(count), count, first))
        for start, end, what in _reserved_areas(engine, size):
            count, first = _nonzero(raw, start, end)
            if count:
                nonzero_total += count
                regions.append(HiddenRegion(start, end - start, "reserved", what, True, count, first))
        if out_dir is not None:
            regions = _dump(raw, regions, Path(out_dir))
    finally:
        engine.close()
    regions.sort(key=lambda r: r.file_offset)
    return RecoverResult(image=os.fspath(path), file_size=size, regions=tuple(regions),
                         bytes_unreferenced=unreferenced, bytes_nonzero=nonzero_total, truncated=truncated,
                         seconds=time.perf_counter() - t0)


def _referenced(engine: BlockEngine) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """(starts, ends) of every structure in use, as int64 arrays (one entry per allocated block:
    a BAT of millions makes no Python object per block), and {file offset: BAT index} of blocks
    whose entry was released (ZERO/UNMAPPED/NOT_PRESENT) but still names an offset."""
    image = engine.image
    header = image.headers.current
    fixed = [(0, HEADER_SECTION_SIZE)]
    if header.log_length:
        fixed.append((header.log_offset, header.log_offset + header.log_length))
    fixed += [(e.file_offset, e.end) for e in image.region_table.entries]
    bat = image.bat
    states = (bat & np.uint64(BAT_STATE_MASK)).astype(np.int64)
    offsets = (bat & np.uint64(BAT_FILE_OFFSET_MASK)).astype(np.int64)
    g = image.geometry
    is_bitmap = np.zeros(len(bat), dtype=bool)
    bitmap_idx = g.bitmap_bat_indices()
    bitmap_idx = bitmap_idx[bitmap_idx < len(bat)]
    is_bitmap[bitmap_idx] = True
    payload_used = ~is_bitmap & ((states == PayloadBlockState.FULLY_PRESENT) | (states == PayloadBlockState.PARTIALLY_PRESENT))
    bitmap_used = is_bitmap & (states == SectorBitmapState.PRESENT)
    payload_starts, bitmap_starts = offsets[payload_used], offsets[bitmap_used]
    starts = np.concatenate([np.array([a for a, _ in fixed], dtype=np.int64), payload_starts, bitmap_starts])
    ends = np.concatenate([np.array([b for _, b in fixed], dtype=np.int64), payload_starts + g.block_size,
                           bitmap_starts + SECTOR_BITMAP_BLOCK_SIZE])
    # Only offsets inside the file can mark free space, and each marks it once: a BAT of millions
    # of released entries (all naming offsets) must not become a dict of millions of ints.
    released_mask = ~is_bitmap & ~payload_used & (offsets != 0) & (offsets < image.raw_source.size())
    latest = np.flatnonzero(released_mask)[::-1]  # the last entry naming an offset wins, as before
    marks, first = np.unique(offsets[latest], return_index=True)
    released = dict(zip(marks.tolist(), latest[first].tolist()))
    return starts, ends, released


def _holes(starts: np.ndarray, ends: np.ndarray, size: int) -> list[tuple[int, int]]:
    """The ranges of [0, size) that no [start, end) covers: sort by start, and a hole opens
    wherever a start lies past the furthest end so far."""
    keep = ends > starts
    starts, ends = starts[keep], ends[keep]
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends) if len(ends) else ends
    previous = np.concatenate([np.zeros(1, dtype=np.int64), reach[:-1]])
    gap = np.flatnonzero(starts > previous)
    holes = [(int(previous[i]), min(int(starts[i]), size)) for i in gap.tolist()]
    last = int(reach[-1]) if len(reach) else 0
    if last < size:
        holes.append((last, size))
    return [(lo, hi) for lo, hi in holes if lo < hi]


def _gaps(holes: list[tuple[int, int]], released: dict[int, int], block_size: int,
          end_of_structures: int) -> Iterator[tuple[int, int, str, str]]:
    """The holes cut into 1 MiB-aligned pieces of at most one block, released blocks apart."""
    marks = sorted(released)
    for lo, hi in holes:
        kind = "slack" if lo >= end_of_structures else "unreferenced"
        cur = lo
        while cur < hi:
            index = released.get(cur)
            if index is not None:
                nxt = min(hi, cur + block_size)
                yield cur, nxt, "released", f"block released by BAT entry {index} (its offset is still recorded)"
            else:
                i = bisect.bisect_right(marks, cur)
                nxt = min(hi, cur + block_size, marks[i] if i < len(marks) else hi)
                yield cur, nxt, kind, "space after the last structure" if kind == "slack" else "free space"
            cur = nxt


def _reserved_areas(engine: BlockEngine, size: int) -> Iterator[tuple[int, int, str]]:
    """Areas the format reserves (to be zero), each named."""
    image = engine.image
    yield len(FILE_IDENTIFIER_SIGNATURE) + CREATOR_SIZE, FILE_IDENTIFIER_SIZE, "file identifier reserved area"
    fields = HEADER_FIELDS.sizeof()
    for i, slot in enumerate((HEADER_1_OFFSET, HEADER_2_OFFSET), start=1):
        yield slot + fields, slot + HEADER_SIZE, f"header {i} reserved bytes"
        yield slot + HEADER_SIZE, slot + HEADER_SLOT_SIZE, f"header {i} slot after the header"
    count = len(image.region_table.entries)
    for i, table in enumerate((REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET), start=1):
        yield table + REGION_TABLE_HEADER_SIZE + count * REGION_TABLE_ENTRY_SIZE, table + REGION_TABLE_SIZE, \
            f"region table {i} after its entries"
    yield REGION_TABLE_2_OFFSET + REGION_TABLE_SIZE, HEADER_SECTION_SIZE, "reserved end of the header section"
    meta = image.region_table.metadata
    entries = image.metadata.entries
    yield (meta.file_offset + METADATA_TABLE_HEADER_SIZE + len(entries) * METADATA_TABLE_ENTRY_SIZE,
           meta.file_offset + METADATA_TABLE_SIZE, "metadata table after its entries")
    items = sorted((meta.file_offset + e.offset, meta.file_offset + e.offset + e.length) for e in entries if e.length)
    pos = meta.file_offset + METADATA_TABLE_SIZE
    for s, e in items + [(meta.end, meta.end)]:
        if s > pos:
            yield pos, min(s, meta.end), "metadata region between items"
        pos = max(pos, e)
    bat = image.region_table.bat
    used = image.geometry.bat_entry_count * BAT_ENTRY_SIZE
    if bat.length > used:
        yield bat.file_offset + used, bat.end, "BAT region after the last entry"


def _nonzero(raw: RandomAccess, start: int, end: int) -> tuple[int, int | None]:
    """(count of non-zero bytes, offset of the first) in [start, end); holes of a sparse file are skipped."""
    end = min(end, raw.size())
    count = 0
    first: int | None = None
    buf = np.frombuffer(io_buffer(min(SCAN_CHUNK, max(0, end - start)) or 1), dtype=np.uint8)
    for lo, hi in _data_ranges(raw, start, end):
        pos = lo
        while pos < hi:
            n = min(len(buf), hi - pos)
            view = memoryview(buf)[:n]
            got = raw.readinto(pos, view)
            arr = buf[:got]
            nz = np.count_nonzero(arr)
            if nz:
                if first is None:
                    first = pos + int(np.flatnonzero(arr)[0])
                count += int(nz)
            if got < n:
                break
            pos += n
    return count, first


def _data_ranges(raw: RandomAccess, start: int, end: int) -> Iterator[tuple[int, int]]:
    fd = getattr(raw, "fd", -1)
    if fd < 0 or not hasattr(os, "SEEK_DATA"):
        yield start, end
        return
    pos = start
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            return
        if data >= end:
            return
        hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        yield data, hole
        pos = hole


def _dump(raw: RandomAccess, regions: list[HiddenRegion], folder: Path) -> list[HiddenRegion]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for r in regions:
        if not r.nonzero:
            out.append(r)
            continue
        target = folder / f"{r.kind}-0x{r.file_offset:012x}.bin"
        with open(target, "wb") as fh:
            pos, end = r.file_offset, r.file_offset + r.length
            buf = io_buffer(min(SCAN_CHUNK, r.length))
            while pos < end:
                n = min(len(buf), end - pos)
                got = raw.readinto(pos, buf[:n])
                fh.write(buf[:got])
                if got < n:
                    break
                pos += n
        out.append(HiddenRegion(r.file_offset, r.length, r.kind, r.structure, r.nonzero, r.nonzero_bytes,
                                r.first_nonzero, str(target)))
    return out


# --- log history -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoggedWrite(OperationResult):
    kind: str  # "data" or "zero"
    file_offset: int
    length: int
    target: str  # which structure the write lands in
    bat_entries: tuple[dict[str, Any], ...] = ()  # for BAT sectors: the entries it records in use or changed


@dataclass(frozen=True)
class LogRecord(OperationResult):
    log_offset: int
    length: int
    sequence_number: int
    tail: int
    log_guid: str
    current_guid: bool  # its LogGuid is the current header's (else: a stale entry of an earlier session)
    active: bool  # part of the sequence a replay would apply now
    flushed_file_offset: int
    last_file_offset: int
    writes: tuple[LoggedWrite, ...]


@dataclass(frozen=True)
class LogHistory(OperationResult):
    image: str
    log_offset: int
    log_length: int
    current_log_guid: str
    entries: tuple[LogRecord, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)


def log_history(path: str | os.PathLike[str]) -> LogHistory:
    """Every valid log entry in the log region, whatever its LogGuid, oldest sequence first."""
    engine = open_engine(path, require_parent=False)
    try:
        image = engine.image
        header = image.headers.current
        raw = engine.image.raw_source
        log = bytearray(header.log_length)
        got = raw.readinto(header.log_offset, memoryview(log)) if header.log_length else 0
        notes = [] if got == header.log_length else [f"the log region is cut short by the end of the file ({got} bytes)"]
        entries = all_entries(bytes(log), header.log_offset)
        active = {e.log_offset for e in (image.log.active if image.log is not None else ())}
        zero_guid = header.log_guid.int == 0
        targets = _targets(engine)
        records = []
        for e in sorted(entries, key=lambda x: (x.log_guid != header.log_guid, str(x.log_guid), x.sequence_number)):
            records.append(LogRecord(
                log_offset=e.log_offset, length=e.length, sequence_number=e.sequence_number, tail=e.tail,
                log_guid=str(e.log_guid), current_guid=(not zero_guid and e.log_guid == header.log_guid),
                active=e.log_offset in active and e.log_guid == header.log_guid,
                flushed_file_offset=e.flushed_file_offset, last_file_offset=e.last_file_offset,
                writes=tuple(_describe_write(engine, w, targets) for w in e.writes)))
        return LogHistory(image=os.fspath(path), log_offset=header.log_offset, log_length=header.log_length,
                          current_log_guid=str(header.log_guid), entries=tuple(records), notes=tuple(notes))
    finally:
        engine.close()


def _targets(engine: BlockEngine) -> list[tuple[int, int, str]]:
    image = engine.image
    out = [(REGION_TABLE_1_OFFSET, REGION_TABLE_1_OFFSET + REGION_TABLE_SIZE, "region table 1"),
           (REGION_TABLE_2_OFFSET, REGION_TABLE_2_OFFSET + REGION_TABLE_SIZE, "region table 2")]
    out += [(e.file_offset, e.end, f"{e.name} region") for e in image.region_table.entries]
    bat = image.bat
    g = image.geometry
    idx = g.bitmap_bat_indices()
    idx = idx[idx < len(bat)]
    for i in idx[(bat[idx] & np.uint64(BAT_STATE_MASK)) == np.uint64(SectorBitmapState.PRESENT)].tolist():
        off = int(bat[i] & np.uint64(BAT_FILE_OFFSET_MASK))
        out.append((off, off + SECTOR_BITMAP_BLOCK_SIZE, f"sector bitmap block of chunk {i // (g.chunk_ratio + 1)}"))
    return out


def _describe_write(engine: BlockEngine, w: Any, targets: list[tuple[int, int, str]]) -> LoggedWrite:
    length = LOG_SECTOR_SIZE if isinstance(w, DataWrite) else w.length
    target = next((name for s, e, name in targets if s <= w.file_offset < e), "outside any known structure")
    entries: tuple[dict[str, Any], ...] = ()
    if isinstance(w, DataWrite) and target == "BAT region":
        entries = _bat_changes(engine, w)
    return LoggedWrite("data" if isinstance(w, DataWrite) else "zero", w.file_offset, length, target, entries)


def _bat_changes(engine: BlockEngine, w: DataWrite) -> tuple[dict[str, Any], ...]:
    """The BAT entries a logged BAT sector records: which virtual blocks (or sector bitmap
    chunks) were allocated where when it was written, and whether the BAT still says so."""
    image = engine.image
    g = image.geometry
    first = (w.file_offset - image.region_table.bat.file_offset) // BAT_ENTRY_SIZE
    logged = np.frombuffer(w.data, dtype="<u8")
    now = image.bat[first : first + len(logged)]
    if len(now) < len(logged):
        now = np.concatenate([now, np.zeros(len(logged) - len(now), dtype=np.uint64)])
    out = []
    # Every entry the sector records as in use, and every one that differs from the BAT now: the
    # state of those blocks when the entry was written ("changed" says whether it still holds).
    for k in np.flatnonzero((logged != 0) | (logged != now)).tolist():
        index = first + k
        group, pos = divmod(index, g.chunk_ratio + 1)
        value, current = int(logged[k]), int(now[k])
        item: dict[str, Any] = {"bat_index": index}
        if pos == g.chunk_ratio:
            item["bitmap_chunk"] = group
        else:
            block = group * g.chunk_ratio + pos
            item["block"] = block
            item["virtual_offset"] = block * g.block_size
        item.update(logged_state=STATE_NAMES.get(value & BAT_STATE_MASK, str(value & BAT_STATE_MASK)),
                    logged_file_offset=value & BAT_FILE_OFFSET_MASK,
                    current_state=STATE_NAMES.get(current & BAT_STATE_MASK, str(current & BAT_STATE_MASK)),
                    current_file_offset=current & BAT_FILE_OFFSET_MASK, changed=value != current)
        out.append(item)
    return tuple(out)


__all__ = ["HiddenRegion", "LogHistory", "LogRecord", "LoggedWrite", "RecoverResult", "find_hidden", "log_history"]


# --- the case-file report -------------------------------------------------------------------------------
def forensic_report(path: str | os.PathLike[str], *, parent_search: tuple[str, ...] = (),
                    parent: str | None = None) -> dict[str, Any]:
    """Everything an examiner records about an image, as plain JSON-ready values: identifiers
    from both headers, creator, geometry, parent locator as recorded, file timestamps, and the
    findings of a read-only ``check``. Nothing is written (the check does not repair)."""
    from .check import check  # the check is an operation of the same layer

    name = os.fspath(path)
    st = os.stat(name)
    engine = open_engine(name, require_parent=False, parent_search=parent_search, parent=parent)
    try:
        image = engine.image
        choice = image.headers
        headers = []
        for slot, h in enumerate(choice.headers, start=1):
            if h is None:
                headers.append({"slot": slot, "valid": False})
                continue
            headers.append({"slot": slot, "valid": True, "current": slot - 1 == choice.current_index,
                            "sequence_number": h.sequence_number, "file_write_guid": str(h.file_write_guid),
                            "data_write_guid": str(h.data_write_guid), "log_guid": str(h.log_guid),
                            "log_offset": h.log_offset, "log_length": h.log_length, "version": h.version,
                            "log_version": h.log_version})
        md = image.metadata
        locator = md.parent_locator
        report: dict[str, Any] = {
            "image": os.path.abspath(name),
            "file": {"size": st.st_size, "mtime": _iso(st.st_mtime_ns), "atime": _iso(st.st_atime_ns),
                     "ctime": _iso(st.st_ctime_ns), "birthtime": _iso_seconds(st.st_birthtime) if getattr(st, "st_birthtime", None) else None,
                     "inode": st.st_ino, "device": st.st_dev, "mode": oct(st.st_mode), "uid": st.st_uid,
                     "gid": st.st_gid},
            "creator": image.creator,
            "disk_type": image.disk_type,
            "virtual_disk_id": str(md.virtual_disk_id),
            "virtual_size": md.virtual_disk_size,
            "block_size": md.block_size,
            "logical_sector_size": md.logical_sector_size,
            "physical_sector_size": md.physical_sector_size,
            "headers": headers,
            "current_header": choice.current_index + 1,
            "log": {"pending": image.log_replayed_in_memory,
                    "active_entries": len(image.log.active) if image.log is not None else 0},
            "regions": [{"name": e.name, "guid": str(e.guid), "file_offset": e.file_offset, "length": e.length,
                         "required": e.required} for e in image.region_table.entries],
            "parent_locator": None if locator is None else {
                "locator_type": str(locator.locator_type),
                "entries": dict(locator.entries),
                "accepted_parent_data_write_guids": [str(g) for g in locator.linkages],
            },
            "problems": list(image.problems) + [str(p) for p in choice.problems],
        }
    finally:
        engine.close()
    findings = check(name, parent_search=parent_search, parent=parent)
    report["check"] = {"exit_status": findings.exit_status,
                       "findings": [f.to_dict() for f in findings.findings]}
    return report


def _iso(ns: int) -> str:
    return _iso_seconds(ns / 1e9)


def _iso_seconds(seconds: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).isoformat(timespec="microseconds")
