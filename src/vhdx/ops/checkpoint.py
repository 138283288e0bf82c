"""Offline, disk-level checkpoints in the Hyper-V style: a chain of differencing images in one
folder, from a base disk to the *active* disk (the newest leaf, the one a VM would write to).

* ``create_checkpoint``: a new differencing child of the active disk, named
  ``<NAME>_<GUID>.avhdx`` as Hyper-V names checkpoint disks (NAME: the base file's stem by
  default; GUID: a new random one, upper case, no braces), becomes the active disk. The disk that
  was active is frozen from then on: it holds the checkpoint's state.
* ``list_checkpoints``: the chain from the base to the active disk, in creation order (the chain
  order; file modification times are given too), with file sizes.
* ``revert_checkpoint``: the active disk is deleted, so its parent becomes active again: what was
  written since the newest checkpoint is discarded. Refused when only the base disk is left.
* ``delete_checkpoint``: a checkpoint disk is merged into its parent (``merge``) and removed;
  the data stays, only the restore point goes. A disk in the middle of the chain has a child,
  which is re-pointed to the parent: the child first accepts the parent's new DataWriteGuid in
  ``parent_linkage2`` (merge step 1), then, after the merge, its locator names the parent with
  ``parent_linkage`` = that GUID, and only then is the merged file removed (VHDX-FORMAT.md 7.6).

The chain is found from any of its disks: parents through each image's parent locator, children
by looking in the folder for differencing images whose locator leads to the disk and whose
parent_linkage matches its DataWriteGuid. A disk with two such children is not a linear chain,
and every operation refuses it.

References: MS-VHDX 2.6.2.6; VHDX-FORMAT.md 7.6-7.7.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from ..constants import MAX_CHAIN_DEPTH
from ..create import create
from ..disk import open_engine
from ..errors import ParentChainError, VhdxError
from ..newfile import sync_dir
from ._children import find_children, load_header_and_locator, resolved_parent, same_file
from .merge import MergeResult, merge_chain
from .progress import ProgressCallback
from .result import OperationResult

# Hyper-V's extension for the differencing disks of checkpoints.
CHECKPOINT_SUFFIX = ".avhdx"


@dataclass(frozen=True)
class CheckpointDisk(OperationResult):
    """One disk of a checkpoint chain.

    Attributes:
        path: the file.
        index: creation order: 0 for the base disk, then 1, 2, ... along the chain.
        kind: ``"base"`` or ``"checkpoint"`` (a differencing disk of the chain).
        active: this is the newest leaf, the disk that takes new writes.
        disk_type: ``"fixed"``, ``"dynamic"`` or ``"differencing"``.
        file_size: length of the file.
        modified: the file's modification time (seconds since the epoch).
        data_write_guid: the disk's current DataWriteGuid.
    """

    path: str
    index: int
    kind: str
    active: bool
    disk_type: str
    file_size: int
    modified: float
    data_write_guid: str


@dataclass(frozen=True)
class CheckpointChain(OperationResult):
    """What ``list_checkpoints`` returns: the disks from the base to the active one.

    Attributes:
        base, active: the first and last disk of the chain.
        disks: every disk, base first.
        leftovers: disks merged away by a deletion that was interrupted before removing them;
            their data is in their parent already and they can be deleted.
    """

    base: str
    active: str
    disks: list[CheckpointDisk]
    leftovers: list[str]


@dataclass(frozen=True)
class CheckpointResult(OperationResult):
    """What ``create_checkpoint``, ``revert_checkpoint`` and ``delete_checkpoint`` did.

    Attributes:
        action: ``"create"``, ``"revert"`` or ``"delete"``.
        checkpoint: the disk created, discarded or merged away.
        active: the active disk afterwards.
        chain: the chain afterwards, base first.
        merge: what the merge did (``"delete"`` only).
        file_size_before: length of the file discarded or merged away (None for create).
        file_size_after: length of the file created (None otherwise).
        seconds: wall time.
    """

    action: str
    checkpoint: str
    active: str
    chain: list[str]
    merge: MergeResult | None
    file_size_before: int | None
    file_size_after: int | None
    seconds: float


# --- the chain ------------------------------------------------------------------------------------------
def checkpoint_chain(image: str | os.PathLike[str], *, parent_search: Sequence[str | os.PathLike[str]] = ()) -> list[str]:
    """The chain that ``image`` belongs to, base first, active (newest leaf) last.

    Raises:
        VhdxError: the chain cannot be opened, or a disk has more than one child (not linear).
    """
    return _walk(image, parent_search)[0]


def _walk(image: str | os.PathLike[str], parent_search: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """(the chain base first, leftovers of an interrupted checkpoint deletion)."""
    image = os.path.abspath(os.fspath(image))
    engine = open_engine(image, parent_search=parent_search)
    try:
        below = []
        layer = engine
        while layer is not None:
            below.append(os.path.abspath(layer.image.name))
            layer = layer.parent
        guid = engine.image.headers.current.data_write_guid
    finally:
        engine.close()
    chain = list(reversed(below))
    leftovers: list[str] = []
    current = image
    while True:
        children = find_children(current, [guid], parent_search=parent_search, exclude=chain + leftovers)
        if len(children) > 1:
            # A deletion from the middle that stopped after re-pointing the next disk but before
            # removing the merged one leaves that merged disk linked only through
            # parent_linkage2 (merge step 1) next to the re-pointed child, which links through
            # parent_linkage. The former holds nothing the parent lacks now: set it aside.
            direct = [c for c in children if c.linkage == guid]
            stale = [c for c in children if c.linkage != guid]
            if len(direct) == 1:
                leftovers += [os.path.abspath(c.path) for c in stale]
                children = direct
        if not children:
            return chain, leftovers
        if len(children) > 1:
            names = ", ".join(c.path for c in children)
            raise VhdxError(f"not a linear checkpoint chain: {len(children)} differencing disks are children of it "
                            f"({names})", image=current)
        if len(chain) > MAX_CHAIN_DEPTH:
            raise ParentChainError(f"the chain of children is deeper than {MAX_CHAIN_DEPTH}", image=current)
        current = os.path.abspath(children[0].path)
        guid = children[0].data_write_guid
        chain.append(current)


def list_checkpoints(image: str | os.PathLike[str], *,
                     parent_search: Sequence[str | os.PathLike[str]] = ()) -> CheckpointChain:
    """Describe the checkpoint chain of ``image`` (any of its disks), base first."""
    chain, leftovers = _walk(image, parent_search)
    disks = []
    for index, path in enumerate(chain):
        loaded = load_header_and_locator(path)
        if loaded is None:
            raise VhdxError("cannot be read any more (changed during the listing?)", image=path)
        st = os.stat(path)
        disks.append(CheckpointDisk(
            path=path, index=index, kind="base" if index == 0 else "checkpoint", active=index == len(chain) - 1,
            disk_type=loaded.disk_type, file_size=st.st_size, modified=st.st_mtime,
            data_write_guid=str(loaded.headers.current.data_write_guid)))
    return CheckpointChain(base=chain[0], active=chain[-1], disks=disks, leftovers=leftovers)


# --- operations ------------------------------------------------------------------------------------------
def checkpoint_file_name(name: str, guid: uuid.UUID) -> str:
    """``NAME_5D2B3C2E-....avhdx``: how Hyper-V names a checkpoint's differencing disk."""
    return f"{name}_{str(guid).upper()}{CHECKPOINT_SUFFIX}"


def create_checkpoint(image: str | os.PathLike[str], *, name: str | None = None, block_size: int | None = None,
                      parent_search: Sequence[str | os.PathLike[str]] = ()) -> CheckpointResult:
    """Make a new checkpoint: a differencing child of the active disk, next to it, which becomes
    the active disk.

    Args:
        image: any disk of the chain.
        name: the file name's prefix (default: the base disk's file name without its extension).
        block_size: of the new disk (default: Hyper-V's 2 MiB for differencing disks).
        parent_search: folders to look for parents in (as for ``vhdx.open``).

    Raises:
        ValueError: ``name`` is empty or contains a path separator.
        VhdxError: the chain cannot be opened or is not linear.
    """
    started = time.perf_counter()
    chain = checkpoint_chain(image, parent_search=parent_search)
    active = chain[-1]
    if name is None:
        name = os.path.splitext(os.path.basename(chain[0]))[0]
    if not name or any(sep in name for sep in ("/", "\\", os.sep)) or name in (".", ".."):
        raise ValueError(f"checkpoint name {name!r} must be a plain file name prefix")
    path = os.path.join(os.path.dirname(active), checkpoint_file_name(name, uuid.uuid4()))
    create(path, parent=active, block_size=block_size).close()
    return CheckpointResult(action="create", checkpoint=path, active=path, chain=[*chain, path], merge=None,
                            file_size_before=None, file_size_after=os.path.getsize(path),
                            seconds=time.perf_counter() - started)


def revert_checkpoint(image: str | os.PathLike[str], *,
                      parent_search: Sequence[str | os.PathLike[str]] = ()) -> CheckpointResult:
    """Discard the active disk (everything written since the newest checkpoint): its parent
    becomes the active disk again.

    Raises:
        VhdxError: the chain cannot be opened or is not linear, or it has no checkpoint (only
            the base disk).
    """
    started = time.perf_counter()
    chain = checkpoint_chain(image, parent_search=parent_search)
    if len(chain) < 2:
        raise VhdxError("no checkpoint to revert to: the base disk is the active disk", image=chain[0])
    active = chain[-1]
    size = os.path.getsize(active)
    os.unlink(active)
    sync_dir(os.path.dirname(active))
    return CheckpointResult(action="revert", checkpoint=active, active=chain[-2], chain=chain[:-1], merge=None,
                            file_size_before=size, file_size_after=None, seconds=time.perf_counter() - started)


def delete_checkpoint(image: str | os.PathLike[str], checkpoint: str | os.PathLike[str] | None = None, *,
                      force: bool = False, parent_search: Sequence[str | os.PathLike[str]] = (),
                      progress: ProgressCallback | None = None) -> CheckpointResult:
    """Delete a checkpoint: merge its disk into its parent and remove it. The active disk reads
    exactly as before; only the restore point is gone.

    Args:
        image: any disk of the chain.
        checkpoint: the checkpoint disk to delete (a path, or a file name in ``image``'s folder);
            by default the newest one (the active disk, whose parent then becomes active). A disk
            left over by an interrupted deletion (see ``CheckpointChain.leftovers``) is removed.
        force: merge even if other images depend on the parent (see ``merge``).
        parent_search: folders to look for parents in (as for ``vhdx.open``).
        progress: as for ``merge``.

    Raises:
        ValueError: ``checkpoint`` is not a checkpoint disk of the chain (or is the base disk).
        VhdxError: the chain cannot be opened or is not linear, it has no checkpoint, or the
            merge refuses (see ``merge``).
    """
    started = time.perf_counter()
    chain, leftovers = _walk(image, parent_search)
    if checkpoint is not None:
        for leftover in leftovers:
            if same_file(_resolve_name(checkpoint, image), leftover):
                return _finish_leftover(leftover, chain, parent_search, started)
    if len(chain) < 2:
        raise VhdxError("no checkpoint to delete: the chain is only the base disk", image=chain[0])
    index = len(chain) - 1 if checkpoint is None else _index_in_chain(chain, checkpoint, image)
    if index == 0:
        raise ValueError(f"{chain[0]} is the base disk, not a checkpoint")
    doomed = chain[index]
    size = os.path.getsize(doomed)
    reparent = chain[index + 1 : index + 2]
    result = merge_chain(doomed, force=force, parent_search=parent_search, progress=progress, reparent=reparent)
    after = chain[:index] + chain[index + 1 :]
    return CheckpointResult(action="delete", checkpoint=doomed, active=after[-1], chain=after, merge=result,
                            file_size_before=size, file_size_after=None, seconds=time.perf_counter() - started)


def _resolve_name(checkpoint: str | os.PathLike[str], image: str | os.PathLike[str]) -> str:
    """A path as given if it exists; a bare file name is also looked for in ``image``'s folder."""
    given = os.fspath(checkpoint)
    if not os.path.exists(given) and not os.path.dirname(given):
        return os.path.join(os.path.dirname(os.path.abspath(os.fspath(image))), given)
    return given


def _index_in_chain(chain: list[str], checkpoint: str | os.PathLike[str], image: str | os.PathLike[str]) -> int:
    candidate = _resolve_name(checkpoint, image)
    for index, path in enumerate(chain):
        if same_file(candidate, path):
            return index
    raise ValueError(f"{os.fspath(checkpoint)} is not a disk of the checkpoint chain ({' -> '.join(chain)})")


def _finish_leftover(leftover: str, chain: list[str], parent_search: Sequence[str | os.PathLike[str]],
                     started: float) -> CheckpointResult:
    """Complete a deletion from the middle that stopped after the next disk was re-pointed: the
    merged disk is redundant (its parent holds its data) and goes; the re-pointed disk's log,
    which may still hold the locator edit, is replayed (a writable open does that and nothing
    else when there is nothing to write)."""
    size = os.path.getsize(leftover)
    loaded = load_header_and_locator(leftover)
    parent = resolved_parent(loaded, parent_search) if loaded is not None else None
    os.unlink(leftover)
    sync_dir(os.path.dirname(leftover))
    for index, path in enumerate(chain[:-1]):
        if parent is not None and same_file(path, parent):
            open_engine(chain[index + 1], writable=True, parent_search=parent_search).close()
    return CheckpointResult(action="delete", checkpoint=leftover, active=chain[-1], chain=chain, merge=None,
                            file_size_before=size, file_size_after=None, seconds=time.perf_counter() - started)


__all__ = ["CheckpointChain", "CheckpointDisk", "CheckpointResult", "checkpoint_chain", "checkpoint_file_name",
           "create_checkpoint", "delete_checkpoint", "list_checkpoints", "revert_checkpoint"]
