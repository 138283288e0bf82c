"""merge(): fold a differencing child (and any images between) into its parent or a farther
ancestor, in place (Hyper-V's Merge-VHD).

After the merge the ancestor (the *target*) reads exactly as the child read before, and the merged
images are removed (kept with ``keep=True``). Flattening a chain into a new file is ``convert``.

Crash safety (VHDX-FORMAT.md 5.4, 7.6, 12). The target's DataWriteGuid must change (its content
does), which would break the link of the image above it; ``parent_linkage2`` exists for exactly
this. The steps:

1. The target's new DataWriteGuid G is chosen up front. In the image directly above the target
   (the one whose parent it is), ``parent_linkage2 = G`` is committed through that image's log.
   This is a locator edit: that image's own DataWriteGuid does not change, so nothing above it
   notices. It now accepts its parent with either the old GUID or G.
2. The target is opened writable; its header takes DataWriteGuid G before the first write
   (``Journal.begin(visible=True, data_write_guid=G)``). Every range that the images above the
   target answer themselves (data, partially present blocks to the sector, and ZERO/UNMAPPED
   blocks, which hide the target's data too) is copied into it, read through the child's chain so
   that the upper layers win. The target's metadata changes go through its log as in any write.
3. Only then are the merged images deleted (the lowest first).

A crash before step 3 leaves a chain that reads exactly as before: the images above the target
still answer every range the target has gained, and the link holds with either GUID. Running the
merge again completes it: it finds G in ``parent_linkage2`` and reuses it, and copying the same
ranges again is harmless. Step 3 only unlinks files once the target is complete; with images
between the child and the target, a crash between two unlinks leaves the child with a missing
parent (it refuses to open rather than read wrong data) and it is simply deleted.

The target's IsVirtualDisk metadata is replaced by the child's (MS-VHDX 2.6.1.2: drop the
parent's, copy the child's): the known ones are the disk id and the physical sector size (the
virtual size and logical sector size must already match). Unknown user items are not copied.

Other children of the target (its DataWriteGuid changes) and of the removed images would be
orphaned; they are looked for next to those images (and in ``search`` folders), and the merge is
refused while any exist unless ``force=True``.

References: MS-VHDX 2.2.2, 2.6.1.2, 2.6.2.6; VHDX-FORMAT.md 5.4, 7.2, 7.6, 8.3, 12.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..constants import (
    BAT_STATE_MASK,
    PARENT_KEY_LINKAGE,
    PARENT_KEY_LINKAGE2,
    MiB,
    PayloadBlockState,
)
from ..disk import open_engine
from ..engine.buffers import io_buffer
from ..engine.engine import BlockEngine
from ..engine.mapping import DATA, ZERO
from ..engine.writer import WritableEngine
from ..errors import UnsupportedError, VhdxError
from ..model.parent_locator import build_parent_locator, parse_guid_text
from ..newfile import sync_dir
from ._children import Child, find_children, same_file
from .parent_link import stage_parent_locator
from .progress import ProgressCallback, ProgressReporter
from .result import OperationResult

OPERATION = "merge"
# Bytes read from the chain and written to the target per call: large enough that call overhead
# vanishes, small enough to keep in memory; a multiple of every sector and block size up to it.
COPY_CHUNK = 8 * MiB
# The target's metadata is committed after about this many bytes are copied, so the staged BAT
# and bitmap sectors stay few and a crash loses little work (a re-run copies it again).
FLUSH_EVERY = 512 * MiB

_PRESENT = (int(PayloadBlockState.FULLY_PRESENT), int(PayloadBlockState.PARTIALLY_PRESENT))


@dataclass(frozen=True)
class MergeResult(OperationResult):
    """What ``merge`` did.

    Attributes:
        child: the image merged (the top of the chain given).
        target: the image merged into.
        merged: the images whose data went into the target, top first (the child, then any
            images between it and the target).
        removed: the files deleted (empty with ``keep``).
        kept: the merged images were kept (they are no longer valid alone: see ``merge``).
        reparented: children of the child re-pointed to the target (checkpoint deletion).
        orphaned: other children found that no longer link (only possible with ``force``).
        data_write_guid: the target's new DataWriteGuid.
        resumed: an interrupted merge into the same target was completed.
        bytes_read: payload bytes read from the chain.
        bytes_written: payload bytes written into the target.
        bytes_zeroed: bytes of the target made to read as zeros (ranges the upper images zeroed).
        blocks_allocated: target payload blocks that gained storage.
        blocks_freed: target payload blocks whose storage was let go (now ZERO blocks).
        file_size_before: the target file's length before.
        file_size_after: the target file's length after.
        removed_bytes: total length of the files deleted.
        seconds: wall time.
    """

    child: str
    target: str
    merged: list[str]
    removed: list[str]
    kept: bool
    reparented: list[str]
    orphaned: list[str]
    data_write_guid: str
    resumed: bool
    bytes_read: int
    bytes_written: int
    bytes_zeroed: int
    blocks_allocated: int
    blocks_freed: int
    file_size_before: int
    file_size_after: int
    removed_bytes: int
    seconds: float


def merge(
    child: str | os.PathLike[str],
    *,
    into: str | os.PathLike[str] | None = None,
    force: bool = False,
    keep: bool = False,
    search: Sequence[str | os.PathLike[str]] = (),
    parent_search: Sequence[str | os.PathLike[str]] = (),
    progress: ProgressCallback | None = None,
) -> MergeResult:
    """Merge the differencing image ``child`` into its parent (or the ancestor ``into``).

    Args:
        child: a differencing image (the top of the chain to merge).
        into: the ancestor to merge into (by default the child's parent); any image of the
            child's chain below the child. The images between are merged too.
        force: merge even though other children of the target (or of a removed image) were
            found; they no longer open afterwards (or, for children of a kept intermediate,
            read different data).
        keep: do not delete the merged images. The child's own chain still reads the same, but
            an intermediate image (with ``into`` a grandparent or farther) no longer holds what
            it held: it is not valid alone.
        search: more folders to look for other children in (besides each image's own folder).
        parent_search: folders to look for parents in (as for ``vhdx.open``).
        progress: called as the copy advances (bytes of virtual ranges done, out of the total
            to merge).

    Returns:
        A ``MergeResult``.

    Raises:
        ValueError: ``into`` is not below ``child`` in its chain.
        VhdxError: ``child`` is not a differencing image, the chain cannot be opened, sizes
            differ, or other children were found and ``force`` is False (the message lists them).
        OSError: from the operating system.
    """
    return merge_chain(child, into=into, force=force, keep=keep, search=search, parent_search=parent_search,
                       progress=progress)


def merge_chain(
    child: str | os.PathLike[str],
    *,
    into: str | os.PathLike[str] | None = None,
    force: bool = False,
    keep: bool = False,
    search: Sequence[str | os.PathLike[str]] = (),
    parent_search: Sequence[str | os.PathLike[str]] = (),
    progress: ProgressCallback | None = None,
    reparent: Sequence[str | os.PathLike[str]] = (),
) -> MergeResult:
    """``merge``, plus ``reparent``: children of ``child`` to re-point at the target afterwards
    (used to delete a checkpoint from the middle of a chain). Each gets ``parent_linkage2 = G``
    in step 1, and after the copy its locator names the target with ``parent_linkage = G``; a
    child over the merged target reads as it did over ``child`` (the target now holds everything
    ``child`` showed)."""
    started = time.perf_counter()
    child = os.fspath(child)
    reparent = [os.fspath(p) for p in reparent]
    reader = open_engine(child, parent_search=parent_search)
    try:
        layers = _layers(reader)
        if not reader.differencing:
            raise VhdxError("not a differencing disk: it has no parent to merge into", image=child)
        depth = _target_depth(layers, into)
        target = layers[depth]
        names = [layer.image.name for layer in layers]
        for layer in layers[:depth]:
            if layer.size != target.size:
                raise UnsupportedError(f"virtual size {layer.size} differs from the target's ({target.size}); resize "
                                       "one of them first", image=layer.image.name)
        upper = layers[depth - 1]
        guid, resumed, old_guids = _choose_guid(upper, target)
        orphaned = _others(layers, depth, old_guids, keep=keep, reparent=reparent, search=search,
                           parent_search=parent_search)
        if orphaned and not force:
            listing = "; ".join(f"{c.path} (child of {parent})" for parent, c in orphaned)
            raise VhdxError(f"refusing to merge: {len(orphaned)} other image(s) depend on images this merge "
                            f"changes or removes and would be orphaned: {listing} (force to merge anyway)",
                            image=child)
        runs = list(_runs(reader, depth))
        total = sum(end - start for start, end, _ in runs)

        # Step 1: the image above the target accepts G (and so do children to be re-pointed).
        for path in [names[depth - 1], *reparent]:
            _set_linkage2(path, guid, parent_search)

        # Step 2: copy into the target under DataWriteGuid G.
        reporter = ProgressReporter(progress, OPERATION, total)
        reporter.start()
        stats = _copy(reader, layers[0], names[depth], runs, guid, parent_search, reporter)
        reporter.finish()

        # Children of the child now read the same through the target: point them at it.
        for path in reparent:
            engine = open_engine(path, writable=True, parent_search=parent_search)
            try:
                stage_parent_locator(engine, parent_path=names[depth], linkage=guid, linkage2=None)
                engine.flush()
            finally:
                engine.close()
    finally:
        reader.close()

    # Step 3: remove the merged images, the lowest first: if this stops halfway, what is left
    # above the target is a chain with a missing link (which refuses to open), never an image
    # that silently reads the wrong data.
    merged = names[:depth]
    removed: list[str] = []
    removed_bytes = 0
    if not keep:
        for path in reversed(merged):
            removed_bytes += os.path.getsize(path)
            os.unlink(path)
            removed.append(path)
        for folder in {os.path.dirname(os.path.abspath(p)) for p in removed}:
            sync_dir(folder)
    return MergeResult(
        child=child, target=names[depth], merged=merged, removed=removed, kept=keep, reparented=reparent,
        orphaned=[c.path for _, c in orphaned], data_write_guid=str(guid), resumed=resumed,
        bytes_read=stats["read"], bytes_written=stats["written"], bytes_zeroed=stats["zeroed"],
        blocks_allocated=stats["allocated"], blocks_freed=stats["freed"], file_size_before=stats["size_before"],
        file_size_after=os.path.getsize(names[depth]), removed_bytes=removed_bytes,
        seconds=time.perf_counter() - started)


# --- planning ------------------------------------------------------------------------------------------
def _layers(engine: BlockEngine) -> list[BlockEngine]:
    out = []
    layer: BlockEngine | None = engine
    while layer is not None:
        out.append(layer)
        layer = layer.parent
    return out


def _target_depth(layers: list[BlockEngine], into: str | os.PathLike[str] | None) -> int:
    if into is None:
        return 1
    for depth, layer in enumerate(layers):
        if same_file(layer.image.name, into):
            if depth == 0:
                raise ValueError(f"{os.fspath(into)} is the child itself: merge into one of its parents")
            return depth
    chain = " -> ".join(layer.image.name for layer in layers)
    raise ValueError(f"{os.fspath(into)} is not in the chain of {layers[0].image.name} ({chain})")


def _choose_guid(upper: BlockEngine, target: BlockEngine) -> tuple[uuid.UUID, bool, set[uuid.UUID]]:
    """The target's new DataWriteGuid, whether a merge is being resumed, and the GUIDs that
    the target's other children may hold (its current one, and the one before an interrupted
    merge)."""
    locator = upper.image.metadata.parent_locator
    assert locator is not None
    current = target.image.headers.current.data_write_guid
    primary = parse_guid_text(locator.get(PARENT_KEY_LINKAGE) or "")
    second = parse_guid_text(locator.get(PARENT_KEY_LINKAGE2) or "")
    old = {current} | ({primary} if primary is not None else set())
    if second is not None and second.int != 0 and second != primary:
        # Step 1 of an earlier merge got through: reuse its G. If the target already carries it,
        # step 2 had begun: that merge is being completed.
        return second, current == second, old
    return uuid.uuid4(), False, old


def _others(layers: list[BlockEngine], depth: int, target_guids: set[uuid.UUID], *, keep: bool,
            reparent: Sequence[str], search: Sequence[str | os.PathLike[str]],
            parent_search: Sequence[str | os.PathLike[str]]) -> list[tuple[str, Child]]:
    """Children that the merge would orphan: of the target (new DataWriteGuid), of the images
    between (removed, or kept with different contents) and of the child (removed, unless kept)."""
    chain = [layer.image.name for layer in layers]
    exclude = [*chain, *reparent]
    found: list[tuple[str, Child]] = []
    for index in range(depth, -1, -1):
        if index == 0 and keep:
            break  # the kept child reads as before over the merged target: its children are fine
        path = chain[index]
        guids = target_guids if index == depth else {layers[index].image.headers.current.data_write_guid}
        for c in find_children(path, guids, folders=search, parent_search=parent_search, exclude=exclude):
            found.append((path, c))
    return found


def _runs(reader: BlockEngine, depth: int) -> Iterator[tuple[int, int, str]]:
    """(start, end, DATA or ZERO) ranges answered by the layers above ``depth``, joined where
    they touch. ZERO ranges (ZERO, UNMAPPED, UNDEFINED blocks of an upper image) hide the
    target's data as surely as data does (VHDX-FORMAT.md 8.3)."""
    pending: list[int | str] | None = None
    for e in reader.extents():
        if e.depth >= depth or e.state not in (DATA, ZERO):
            continue
        if pending is not None and pending[1] == e.virtual_offset and pending[2] == e.state:
            pending[1] = e.end
            continue
        if pending is not None:
            yield int(pending[0]), int(pending[1]), str(pending[2])
        pending = [e.virtual_offset, e.end, e.state]
    if pending is not None:
        yield int(pending[0]), int(pending[1]), str(pending[2])


# --- the steps -------------------------------------------------------------------------------------------
def _set_linkage2(path: str, guid: uuid.UUID, parent_search: Sequence[str | os.PathLike[str]]) -> None:
    """Make the differencing image ``path`` also accept ``guid`` as its parent's identity."""
    engine = open_engine(path, writable=True, parent_search=parent_search)
    try:
        assert isinstance(engine, WritableEngine)
        locator = engine.image.metadata.parent_locator
        assert locator is not None
        if parse_guid_text(locator.get(PARENT_KEY_LINKAGE2) or "") == guid:
            return
        stage_parent_locator(engine, linkage2=guid)
        engine.flush()
    finally:
        engine.close()


def _copy(reader: BlockEngine, top: BlockEngine, target_path: str, runs: Iterable[tuple[int, int, str]],
          guid: uuid.UUID, parent_search: Sequence[str | os.PathLike[str]],
          reporter: ProgressReporter) -> dict[str, int]:
    engine = open_engine(target_path, writable=True, parent_search=parent_search)
    assert isinstance(engine, WritableEngine)
    stats = {"read": 0, "written": 0, "zeroed": 0, "allocated": 0, "freed": 0, "size_before": engine.source.size()}
    try:
        before = _has_storage(engine.payload)
        # The header takes G before any byte of the target changes (MS-VHDX 2.2.2; 7.6).
        engine.journal.begin(visible=True, data_write_guid=guid)
        _copy_virtual_disk_items(engine, top, guid)
        view = io_buffer(COPY_CHUNK)
        since_flush = 0
        for start, end, state in runs:
            if state == ZERO:
                engine.zero_range(start, end - start, discard=False)
                stats["zeroed"] += end - start
                reporter.advance(end - start)
                continue
            pos = start
            while pos < end:
                # Windows never cross a COPY_CHUNK boundary, so each write stays within few blocks.
                n = min(end, (pos // COPY_CHUNK + 1) * COPY_CHUNK) - pos
                chunk = view[:n]
                reader.read_into(pos, chunk)
                engine.write(pos, chunk)
                stats["read"] += n
                stats["written"] += n
                since_flush += n
                pos += n
                reporter.advance(n)
                if since_flush >= FLUSH_EVERY:
                    engine.flush()
                    since_flush = 0
        engine.flush()
        after = _has_storage(engine.payload)
        stats["allocated"] = int(np.count_nonzero(after & ~before))
        stats["freed"] = int(np.count_nonzero(before & ~after))
    finally:
        engine.close()
    return stats


def _has_storage(payload: np.ndarray) -> np.ndarray:
    states = payload & np.uint64(BAT_STATE_MASK)
    return (states == np.uint64(_PRESENT[0])) | (states == np.uint64(_PRESENT[1]))


def _copy_virtual_disk_items(engine: WritableEngine, top: BlockEngine, guid: uuid.UUID) -> None:
    """Give the target the child's IsVirtualDisk items (MS-VHDX 2.6.1.2, merge rule)."""
    mine, theirs = engine.image.metadata, top.image.metadata
    if (mine.virtual_disk_id, mine.physical_sector_size) == (theirs.virtual_disk_id, theirs.physical_sector_size):
        return
    new = dataclasses.replace(mine, virtual_disk_id=theirs.virtual_disk_id,
                              physical_sector_size=theirs.physical_sector_size)
    locator = build_parent_locator(list(mine.parent_locator.entries)) if mine.parent_locator is not None else None
    engine.stage_metadata(new, locator, visible=True, data_write_guid=guid)


__all__ = ["MergeResult", "merge", "merge_chain"]
