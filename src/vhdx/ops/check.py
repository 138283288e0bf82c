"""Check a VHDX image (Test-VHD, ``qemu-img check`` and more) and optionally repair it in place.

``check(path)`` reads the file without writing it and without needing it to open: every structure
is examined on its own (``ops/_check_scan.py``). The verdict follows ``qemu-img check``: exit
status 0 clean, 2 corruptions, 3 leaks only, 1 the check could not complete.

``check(path, repair=True)`` then fixes what can be fixed without losing data that is still
reachable, one step at a time, re-examining the file after each step. Every change goes
through the log or the two-slot header protocol, so a crash at any point leaves an image at
least as good as before:

0. two valid headers with equal sequence numbers but different contents (neither is current,
   MS-VHDX 2.2.2) are resolved: both slots are rewritten from the one chosen (a header whose log
   holds entries to replay wins; otherwise header 1) with new sequence numbers; a damaged file
   type identifier (the 'vhdxfile' signature) is written anew, keeping the creator string when
   it is still readable (MS-VHDX 2.2.1);
1. a pending log is replayed in place (the header update that ends a replay rewrites both
   header slots, which also restores a damaged header from its good twin);
2. otherwise a damaged (or rule-breaking non-current) header is rewritten from the current one;
3. a damaged region table copy is restored from the good one, through the log;
4. a file cut short inside a block is extended to the block's end (the missing part read as zeros
   and still does), and data after the last structure is given back (see 6), so that blocks moved
   by step 5 do not land past it;
5. BAT entries that cannot be used (past the end of the file, inside the header section, the log
   or a region, reserved states, partially present blocks without a sector bitmap) are detached:
   NOT_PRESENT, or ZERO in a differencing disk so that the parent's stale data does not show
   (a visible change: the DataWriteGuid changes). Blocks that overlap other blocks keep their
   contents: the later one is copied to new space at the end of the file first;
6. data after the last structure (a leak, including one step 5 made) is given back: a log entry
   recording the smaller size as FlushedFileOffset is committed first (VHDX-FORMAT.md 10.6 step
   6), then the file is truncated. Interior leaks are only reported (compaction reclaims them).

Leaks are counted in 1 MiB units (the allocation unit of the format); ``total-clusters`` and
friends count payload blocks.

References: MS-VHDX 2.2.2.1, 2.3, 2.5; VHDX-FORMAT.md 5.3, 8, 10.4, 10.6.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._units import align_up
from ..constants import (
    BAT_ENTRY_SIZE,
    BAT_STATE_MASK,
    FILE_IDENTIFIER_OFFSET,
    LOG_SECTOR_SIZE,
    OBJECT_ALIGNMENT,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
)
from ..create import default_creator
from ..engine.allocator import FreeSpace
from ..engine.journal import Journal, replay_to_disk
from ..engine.source import FileSource, RandomAccess, is_url
from ..errors import ReadOnlyError, VhdxError
from ..model._decode import build_struct
from ..structs.bat import make_entry
from ..structs.file_identifier import FILE_IDENTIFIER
from ._check_scan import (
    CORRUPTION,
    FIX_BAT,
    FIX_EXTEND,
    FIX_HEADER,
    FIX_HEADER_TIE,
    FIX_IDENTIFIER,
    FIX_LOG,
    FIX_REGION_TABLE,
    FIX_TRUNCATE,
    INFO,
    LEAK,
    WARNING,
    Scan,
    read_upto,
    scan,
)
from .progress import ProgressCallback, report

SEVERITIES = (CORRUPTION, LEAK, WARNING, INFO)
EXIT_CLEAN = 0
EXIT_CHECK_ERROR = 1
EXIT_CORRUPTIONS = 2
EXIT_LEAKS = 3


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem (or remark) about the image.

    Attributes:
        structure: what it is about (``"header 1"``, ``"region table 2"``, ``"BAT"``, ``"log"``,
            ``"file"``, ``"parent locator"``, ...).
        file_offset: where in the file (None when it is not about one place).
        severity: ``"corruption"``, ``"leak"``, ``"warning"`` or ``"info"``.
        message: what is wrong, in words.
        count: how many problems the finding stands for (a summary line, or MiB for a leak).
        fixed: the repair fixed it.
    """

    structure: str
    file_offset: int | None
    severity: str
    message: str
    count: int = 1
    fixed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"structure": self.structure, "file-offset": self.file_offset, "severity": self.severity,
                "message": self.message, "count": self.count, "fixed": self.fixed}


@dataclass(frozen=True, slots=True)
class RepairAction:
    """One change made by ``check(..., repair=True)``.

    Attributes:
        action: ``choose-header``, ``restore-file-identifier``, ``replay-log``, ``restore-header``,
            ``restore-region-table``, ``extend``, ``relocate-blocks``, ``detach-blocks`` or
            ``truncate``.
        message: what was done.
        virtual_ranges: (virtual offset, length) ranges whose contents changed (detached blocks).
    """

    action: str
    message: str
    virtual_ranges: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "message": self.message,
                "virtual-ranges": [{"virtual-offset": o, "length": n} for o, n in self.virtual_ranges]}


@dataclass
class CheckReport:
    """The outcome of ``check``; ``to_dict`` uses ``qemu-img check --output=json``'s field names.

    ``corruptions`` and ``leaks`` are what remains (after a repair, when one was asked for);
    ``corruptions_fixed`` and ``leaks_fixed`` what the repair fixed.
    """

    filename: str
    findings: list[Finding] = field(default_factory=list)
    check_errors: list[str] = field(default_factory=list)
    corruptions: int = 0
    leaks: int = 0
    corruptions_fixed: int = 0
    leaks_fixed: int = 0
    image_end_offset: int | None = None
    total_clusters: int | None = None
    allocated_clusters: int | None = None
    fragmented_clusters: int | None = None
    file_size_before: int = 0  # the file's length when the check started
    file_size_after: int = 0  # and when it ended (smaller after a truncating repair)
    repairs: list[RepairAction] = field(default_factory=list)
    parent: CheckReport | None = None

    @property
    def exit_status(self) -> int:
        """0 clean, 1 the check could not complete, 2 corruptions, 3 leaks only (qemu-img check)."""
        if self.check_errors:
            return EXIT_CHECK_ERROR
        if self.corruptions:
            return EXIT_CORRUPTIONS
        if self.leaks:
            return EXIT_LEAKS
        return EXIT_CLEAN

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "filename": self.filename,
            "format": "vhdx",
            "check-errors": len(self.check_errors),
            "corruptions": self.corruptions,
            "leaks": self.leaks,
            "corruptions-fixed": self.corruptions_fixed,
            "leaks-fixed": self.leaks_fixed,
        }
        for key, value in (("image-end-offset", self.image_end_offset), ("total-clusters", self.total_clusters),
                           ("allocated-clusters", self.allocated_clusters),
                           ("fragmented-clusters", self.fragmented_clusters)):
            if value is not None:
                out[key] = value
        out["file-size-before"] = self.file_size_before
        out["file-size-after"] = self.file_size_after
        out["findings"] = [f.to_dict() for f in self.findings]
        out["errors"] = list(self.check_errors)
        out["repairs"] = [r.to_dict() for r in self.repairs]
        if self.parent is not None:
            out["backing-image"] = self.parent.to_dict()
        return out


def check(
    path: str | os.PathLike[str],
    *,
    repair: bool = False,
    parent_search: Sequence[str | os.PathLike[str]] = (),
    progress: ProgressCallback | None = None,
    parent: str | os.PathLike[str] | None = None,
    ignore_id_mismatch: bool = False,
) -> CheckReport:
    """Check the VHDX image at ``path``; with ``repair``, fix what can be fixed safely.

    Args:
        path: the image. It is only read unless ``repair`` is set; it need not be openable.
        repair: open the file read-write and repair it (see the module docstring).
        parent_search: extra folders in which to look for the parents of a differencing image.
        progress: called as the check advances (``Progress.unit`` is ``"steps"``).
        parent: the parent to check the link against instead of the locator's paths.
        ignore_id_mismatch: report a parent whose DataWriteGuid differs from the child's
            parent_linkage as a warning instead of a corruption.

    Returns:
        A ``CheckReport``; ``report.exit_status`` is what ``qemu-img check`` would exit with.

    Raises:
        OSError: the file cannot be opened (or, with ``repair``, opened for writing).
        ValueError: ``path`` is not a regular file or block device (a directory, a FIFO).
        VhdxError: with ``repair``, another writer holds the image.
    """
    name = os.fspath(path)
    if repair and is_url(name):
        raise ReadOnlyError("images given by URL are checked read-only; copy the file to repair it", image=name)
    explicit = os.fspath(parent) if parent is not None else None

    def examine() -> tuple[Scan, list[tuple[str, Scan]]]:
        return scan(name, progress=progress, parent=explicit, parent_search=parent_search,
                    ignore_id_mismatch=ignore_id_mismatch)

    first, chain = examine()
    if not repair or first.errors:
        return _report(first, chain, [first], set(), [])
    history = [first]
    applied: set[str] = set()
    actions: list[RepairAction] = []
    current = first
    # Trailing leaks go before the BAT step too: blocks it relocates are placed at the end of the
    # file, which would turn a trailing leak into an interior one that only compaction reclaims.
    steps = (_repair_header_tie, _repair_identifier, _repair_log, _repair_header, _repair_region_table, _repair_extend, _repair_truncate, _repair_bat,
             _repair_truncate)
    for number, step in enumerate(steps, 1):
        done = step(current, actions)
        report(progress, "repair", number, len(steps), "steps")
        if done is None:
            continue
        applied.update(done)
        current, chain = examine()
        history.append(current)
        if current.errors:
            break
    return _report(current, chain, history, applied, actions)


def _report(final: Scan, chain: list[tuple[str, Scan]], history: list[Scan], applied: set[str],
            actions: list[RepairAction]) -> CheckReport:
    """List the findings of the first scan, marked fixed when a repair ran and they are gone
    from the last scan, then those that appeared on the way and remain; the counts are those of
    the last scan."""
    final_keys = {f.key for f in final.findings}
    findings: list[Finding] = []
    listed: set[tuple[str, int | None, str, str]] = set()
    corruptions_fixed = 0
    for s in (history[0], final):
        for f in s.findings:
            if f.key in listed:
                continue
            listed.add(f.key)
            fixed = bool(applied) and f.key not in final_keys
            findings.append(Finding(f.structure, f.file_offset, f.severity, f.message, f.count, fixed))
            if fixed and f.severity == CORRUPTION:
                corruptions_fixed += f.count
    leaks_fixed = max(0, max((s.count(LEAK) for s in history), default=0) - final.count(LEAK)) if applied else 0
    order = {sev: i for i, sev in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (f.fixed, order.get(f.severity, len(order))))
    result = CheckReport(
        filename=final.path,
        findings=findings,
        check_errors=list(final.errors),
        corruptions=final.count(CORRUPTION),
        leaks=final.count(LEAK),
        corruptions_fixed=corruptions_fixed,
        leaks_fixed=leaks_fixed,
        image_end_offset=align_up(final.used_end, OBJECT_ALIGNMENT) if final.leak_checked else None,
        total_clusters=final.total_blocks,
        allocated_clusters=final.allocated_blocks,
        fragmented_clusters=final.fragmented_blocks,
        file_size_before=history[0].file_size,
        file_size_after=final.file_size,
        repairs=actions,
    )
    if chain:
        path, parent_scan = chain[0]
        result.parent = _report(parent_scan, chain[1:], [parent_scan], set(), [])
    return result


# --- repair steps: each returns the fix tags it applied, or None when it had nothing to do ----------


class _Writable:
    """The image opened read-write and locked for one repair step."""

    def __init__(self, path: str) -> None:
        self.source = FileSource.open(path, writable=True)
        try:
            _lock(self.source)
        except BaseException:
            self.source.close()
            raise

    def __enter__(self) -> RandomAccess:
        return self.source

    def __exit__(self, *exc: object) -> None:
        self.source.close()


def _lock(source: FileSource) -> None:
    """An exclusive advisory lock, as a writable ``vhdx.open`` takes: two writers corrupt an image."""
    try:
        import fcntl
    except ImportError:  # Windows refuses a second writer itself
        return
    try:
        fcntl.flock(source.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise VhdxError("the image is open for writing elsewhere; not repaired", image=source.name) from None


def _has(s: Scan, tag: str) -> bool:
    return any(f.fix == tag for f in s.findings)


def _repair_header_tie(s: Scan, actions: list[RepairAction]) -> set[str] | None:
    """Equal sequence numbers, different headers (5.2): rewrite both slots from the chosen one.

    ``Journal.update_header`` writes the chosen header with sequence + 1 over the other slot,
    flushes, then sequence + 2 over the chosen slot: after a crash between the two, the slot
    written first is current on its own (its sequence number is larger), so the tie never
    comes back.
    """
    if s.tie_index is None or not _has(s, FIX_HEADER_TIE):
        return None
    chosen = s.headers[s.tie_index]
    assert chosen is not None
    with _Writable(s.path) as source:
        journal = Journal(source, chosen, s.tie_index)
        journal.update_header(file_write_guid=uuid.uuid4())
    actions.append(RepairAction("choose-header", f"rewrote both headers from header {s.tie_index + 1} (equal sequence "
                                f"numbers, different contents; DataWriteGuid {{{chosen.data_write_guid}}} kept)"))
    return {FIX_HEADER_TIE}


def _repair_identifier(s: Scan, actions: list[RepairAction]) -> set[str] | None:
    """Write the file type identifier anew (MS-VHDX 2.2.1): the signature, and the creator
    string when it is still readable, else ours. The first 64 KiB are not covered by the log
    (it must not target them, VHDX-FORMAT.md 10.2), so they are written directly; a crash leaves
    either the old (damaged) or the new identifier, and nothing else depends on them."""
    if s.current is None or not _has(s, FIX_IDENTIFIER):
        return None
    creator = s.creator if s.creator is not None else default_creator()
    data = build_struct(FILE_IDENTIFIER, {"creator": creator})
    with _Writable(s.path) as source:
        # The session's first header update comes before any other byte changes (MS-VHDX 2.2.2).
        Journal(source, s.current, s.current_index).update_header(file_write_guid=uuid.uuid4())
        source.pwrite(FILE_IDENTIFIER_OFFSET, data)
        source.sync()
    kept = "kept the creator string" if s.creator is not None else "the creator string was unreadable; wrote ours"
    actions.append(RepairAction("restore-file-identifier", f"rewrote the file type identifier ({kept}: {creator!r})"))
    return {FIX_IDENTIFIER}


def _repair_log(s: Scan, actions: list[RepairAction]) -> set[str] | None:
    if s.current is None or s.log_scan is None or s.log_status not in ("pending", "no-sequence"):
        return None
    with _Writable(s.path) as source:
        replay_to_disk(source, s.current, s.current_index, s.log_scan)
    head = s.log_scan.head
    if head is None:
        actions.append(RepairAction("replay-log", "cleared a LogGuid that had no complete log sequence"))
    else:
        actions.append(RepairAction("replay-log", f"replayed {len(s.log_scan.active)} log entr"
                                    f"{'y' if len(s.log_scan.active) == 1 else 'ies'} in place"))
    # Ending a replay rewrites both header slots from the current header.
    return {FIX_LOG, FIX_HEADER}


def _repair_header(s: Scan, actions: list[RepairAction]) -> set[str] | None:
    if s.current is None or not _has(s, FIX_HEADER):
        return None
    with _Writable(s.path) as source:
        journal = Journal(source, s.current, s.current_index)
        # The first header update of a writable session gets a new FileWriteGuid (MS-VHDX 2.2.2).
        journal.update_header(file_write_guid=uuid.uuid4())
    actions.append(RepairAction("restore-header", f"rewrote both headers from header {s.current_index + 1}"))
    return {FIX_HEADER}


def _repair_region_table(s: Scan, actions: list[RepairAction]) -> set[str] | None:
    if s.current is None or s.table is None or not s.log_usable or not _has(s, FIX_REGION_TABLE):
        return None
    good = s.table_index
    bad = 1 - good
    with _Writable(s.path) as source:
        journal = Journal(source, s.current, s.current_index)
        journal.begin(visible=False)
        journal.stage((REGION_TABLE_1_OFFSET, REGION_TABLE_2_OFFSET)[bad], s.table_raw[good])
        journal.commit(last_file_offset=source.size())
        journal.close_session()
    actions.append(RepairAction("restore-region-table", f"restored region table {bad + 1} from region table {good + 1}"))
    return {FIX_REGION_TABLE}


def _repair_extend(s: Scan, actions: list[RepairAction]) -> set[str] | None:
    if not _has(s, FIX_EXTEND) or s.file_size != s.size or s.extend_to <= s.file_size:
        return None
    target = align_up(s.extend_to, OBJECT_ALIGNMENT)
    with _Writable(s.path) as source:
        # Growing the file changes nothing a reader sees (the missing part read as zeros) and
        # needs no log: a crash leaves it either length.
        size = source.size()
        source.truncate(target)
        source.sync()
    actions.append(RepairAction("extend", f"extended the file from {_hex(size)} to {_hex(target)} bytes to cover the "
                                          "blocks cut off by its end"))
    return {FIX_EXTEND}


def _repair_bat(s: Scan, actions: list[RepairAction]) -> set[str] | None:
    if (s.current is None or s.geometry is None or not s.log_usable or not _has(s, FIX_BAT)
            or not (s.detach or s.relocate)):
        return None
    g = s.geometry
    ranges = _merge_ranges([(b * g.block_size, g.block_virtual_length(b)) for b in sorted(s.detached_blocks)])
    with _Writable(s.path) as source:
        journal = Journal(source, s.current, s.current_index)
        journal.begin(visible=bool(s.detached_blocks))
        free = FreeSpace(source, max(s.used_end, source.size()))
        moved = []
        for o in s.relocate:
            # Copy first, into space nothing references: the log entry that points the BAT at it
            # is written only after this data is durable (Journal.commit syncs first).
            data = read_upto(source, o.file_offset, o.length)
            target = free.allocate(o.length)
            source.pwrite(target, data)
            index = g.payload_bat_index(o.index) if o.kind == "payload" else g.bitmap_bat_index(o.index)
            assert s.bat is not None
            state = int(s.bat[index]) & BAT_STATE_MASK
            journal.stage(s.bat_offset + index * BAT_ENTRY_SIZE, make_entry(state, target).to_bytes(BAT_ENTRY_SIZE, "little"))
            moved.append(f"{o.name} {_hex(o.file_offset)} -> {_hex(target)}")
        for index, value in sorted(s.detach.items()):
            journal.stage(s.bat_offset + index * BAT_ENTRY_SIZE, make_entry(value, 0).to_bytes(BAT_ENTRY_SIZE, "little"))
        journal.commit(last_file_offset=free.end)
        journal.close_session()
    if moved:
        actions.append(RepairAction("relocate-blocks", f"copied {len(moved)} overlapping block(s) to new space: "
                                    + "; ".join(moved)))
    if s.detach:
        what = "ZERO" if s.differencing else "NOT_PRESENT"
        text = f"detached {len(s.detach)} unusable BAT entr{'y' if len(s.detach) == 1 else 'ies'}"
        if s.detached_blocks:
            text += f" ({len(s.detached_blocks)} payload block(s) now {what}; new DataWriteGuid)"
        actions.append(RepairAction("detach-blocks", text, tuple(ranges)))
    return {FIX_BAT}


def _repair_truncate(s: Scan, actions: list[RepairAction]) -> set[str] | None:
    if s.current is None or not s.leak_checked or not _has(s, FIX_TRUNCATE) or s.table is None:
        return None
    target = align_up(s.used_end, OBJECT_ALIGNMENT)
    with _Writable(s.path) as source:
        size = source.size()
        if target >= size:
            return None
        journal = Journal(source, s.current, s.current_index)
        journal.begin(visible=False)
        # The entry exists to record the smaller size as FlushedFileOffset before the file
        # shrinks (VHDX-FORMAT.md 10.6 step 6); it rewrites one BAT sector with its own bytes.
        bat_offset = s.table.bat.file_offset
        journal.stage(bat_offset, read_upto(source, bat_offset, LOG_SECTOR_SIZE))
        journal.commit(last_file_offset=target, flushed_file_offset=target)
        source.truncate(target)
        source.sync()
        journal.close_session()
    actions.append(RepairAction("truncate", f"truncated the file from {_hex(size)} to {_hex(target)} bytes"))
    return {FIX_TRUNCATE}


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, length in sorted(ranges):
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + length)
        else:
            out.append((start, length))
    return out


def _hex(value: int) -> str:
    return f"0x{value:x}"


__all__ = ["CheckReport", "Finding", "RepairAction", "check"]
