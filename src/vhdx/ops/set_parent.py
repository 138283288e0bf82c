"""Point a differencing image at its parent again after a move (Hyper-V's ``Set-VHD -ParentPath``).

The child's parent locator is rewritten in place: new ``relative_path`` and
``absolute_win32_path``, a stale ``volume_path`` dropped, every other key kept. The new parent is
checked first as a reader would check it (VHDX-FORMAT.md 7.7): it opens as a VHDX with its own
chain, has the child's logical sector size and virtual size, and its current DataWriteGuid is
one the child accepts (``parent_linkage`` or ``parent_linkage2``). ``ignore_id_mismatch`` accepts
a parent that fails only the last test and records its DataWriteGuid as the new
``parent_linkage`` (Hyper-V's ``-IgnoreIdMismatch``); the caller vouches that its contents are
what the child was made from.

The change goes through the log, and the child's own DataWriteGuid is kept: what the child reads
does not change, and its own children stay linked (VHDX-FORMAT.md 5.4).

References: MS-VHDX 2.2.2, 2.6.2.6; VHDX-FORMAT.md 5.4, 7.5-7.7.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

from ..constants import PARENT_KEY_LINKAGE2
from ..disk import open_engine
from ..engine.engine import BlockEngine
from ..engine.writer import WritableEngine
from ..errors import ParentChainError, ParentMismatchError, ParentNotFoundError, UnsupportedError
from .parent_link import stage_parent_locator
from .result import OperationResult

ZERO_GUID = uuid.UUID(int=0)


@dataclass(frozen=True)
class SetParentResult(OperationResult):
    """What ``set_parent`` did.

    Attributes:
        child, parent: the two images (as given).
        parent_data_write_guid: the new parent's current DataWriteGuid.
        linkage_matched: the child already accepted that DataWriteGuid (False: it was accepted
            with ``ignore_id_mismatch`` and written as the new ``parent_linkage``).
        locator_before, locator_after: the child's parent locator keys and values.
        changed: the file was written (False when the locator already said all this).
        child_data_write_guid: the child's DataWriteGuid, the same before and after.
        file_size_before, file_size_after: the child's length.
        seconds: wall time.
    """

    child: str
    parent: str
    parent_data_write_guid: str
    linkage_matched: bool
    locator_before: dict[str, str]
    locator_after: dict[str, str]
    changed: bool
    child_data_write_guid: str
    file_size_before: int
    file_size_after: int
    seconds: float


def set_parent(
    child: str | os.PathLike[str],
    new_parent: str | os.PathLike[str],
    *,
    ignore_id_mismatch: bool = False,
    parent_search: Sequence[str | os.PathLike[str]] = (),
) -> SetParentResult:
    """Make ``new_parent`` the parent recorded in the differencing image ``child``.

    Args:
        child: the differencing image (its recorded parent need not exist any more).
        new_parent: the parent's path now.
        ignore_id_mismatch: accept a parent whose DataWriteGuid is not the one the child
            recorded, and record it (the sizes must still match).
        parent_search: extra folders in which to look for the new parent's own ancestors.

    Returns:
        A ``SetParentResult``.

    Raises:
        ParentMismatchError: different logical sector size or virtual size, or (unless
            ``ignore_id_mismatch``) a DataWriteGuid the child does not accept.
        ParentChainError: ``new_parent`` is ``child`` itself, or ``child`` is among its ancestors.
        ParentNotFoundError: an ancestor of ``new_parent`` cannot be found.
        UnsupportedError: ``child`` is not a differencing image.
        VhdxError: either image cannot be read, or ``child`` is open for writing elsewhere.
        OSError: a file cannot be opened.
    """
    started = time.monotonic()
    child_name, parent_name = os.fspath(child), os.fspath(new_parent)
    if not os.path.exists(parent_name):
        raise FileNotFoundError(2, "No such file or directory", parent_name)
    if os.path.exists(child_name) and os.path.samefile(child_name, parent_name):
        raise ParentChainError("a disk cannot be its own parent", image=child_name, structure="parent locator")
    size_before = os.path.getsize(child_name)
    # The new parent and its ancestors are opened first, read-only; missing ancestors are allowed
    # for now so that a chain leading back to the child is reported as the cycle it is.
    parent_engine = open_engine(parent_name, parent_search=parent_search, require_parent=False)
    try:
        _check_ancestry(parent_engine, child_name)
        engine = open_engine(child_name, writable=True, parent=parent_engine, ignore_id_mismatch=True)
        try:
            assert isinstance(engine, WritableEngine)
            fields = _relink(engine, parent_engine, child_name, parent_name, ignore_id_mismatch)
        finally:
            engine.close()
    finally:
        parent_engine.close()
    _verify(child_name, parent_name)
    return SetParentResult(child=child_name, parent=parent_name, **fields, file_size_before=size_before,
                           file_size_after=os.path.getsize(child_name), seconds=time.monotonic() - started)


def _check_ancestry(parent: BlockEngine, child: str) -> None:
    """Refuse a parent whose chain contains ``child``, or that lacks one of its own ancestors."""
    layer: BlockEngine | None = parent
    while layer is not None:
        if os.path.samefile(layer.image.name, child):
            raise ParentChainError(f"{child} is an ancestor of {parent.image.name}: the chain would loop",
                                   image=child, structure="parent locator")
        if layer.parent is None and layer.parent_missing is not None:
            raise ParentNotFoundError(f"the new parent's chain is incomplete: {layer.parent_missing}",
                                      image=layer.image.name, structure="parent locator")
        layer = layer.parent


def _verify(child: str, parent: str) -> None:
    """Open the child as any reader would, through the new locator alone: it must find ``parent``."""
    engine = open_engine(child, require_parent=False)
    try:
        found = engine.parent
        if found is None or not os.path.samefile(found.image.name, parent):
            where = found.image.name if found is not None else engine.parent_missing
            raise ParentNotFoundError(f"the parent locator was rewritten but does not lead to {parent} ({where})",
                                      image=child, structure="parent locator")
    finally:
        engine.close()


def _relink(engine: WritableEngine, parent: BlockEngine, child_name: str, parent_name: str,
            ignore_id_mismatch: bool) -> dict[str, Any]:
    image = engine.image
    locator = image.metadata.parent_locator
    if not image.metadata.has_parent or locator is None:
        raise UnsupportedError("not a differencing disk: it has no parent to set", image=child_name,
                               structure="metadata")
    p = parent.image
    if p.geometry.logical_sector_size != image.geometry.logical_sector_size:
        raise ParentMismatchError(f"{parent_name} has {p.geometry.logical_sector_size}-byte logical sectors, the "
                                  f"child {image.geometry.logical_sector_size}-byte", image=child_name,
                                  structure="parent locator")
    if p.geometry.virtual_size != image.geometry.virtual_size:
        raise ParentMismatchError(f"{parent_name} is {p.geometry.virtual_size} bytes, the child "
                                  f"{image.geometry.virtual_size}", image=child_name, structure="parent locator")
    actual = p.headers.current.data_write_guid
    matched = actual in locator.linkages
    linkage: uuid.UUID | None = None
    linkage2: uuid.UUID | None | EllipsisType = ...
    if not matched:
        if not ignore_id_mismatch:
            expected = " or ".join(f"{{{g}}}" for g in locator.linkages)
            raise ParentMismatchError(
                f"{parent_name} has DataWriteGuid {{{actual}}} but the child expects {expected}: it is not the "
                f"disk the child was made from, or it was modified since (override with ignore_id_mismatch)",
                image=child_name, structure="parent locator")
        linkage = actual
        # A parent_linkage2 names a second identity of the OLD parent (a merge in progress,
        # 7.6); after re-pinning to another parent it must not keep accepting that one.
        if locator.get(PARENT_KEY_LINKAGE2) is not None:
            linkage2 = ZERO_GUID
    before = dict(locator.entries)
    own_guid = engine.journal.header.data_write_guid
    stage_parent_locator(engine, parent_path=parent_name, linkage=linkage, linkage2=linkage2)
    changed = engine.journal.dirty
    engine.flush()
    after_locator = engine.image.metadata.parent_locator
    assert after_locator is not None
    assert engine.journal.header.data_write_guid == own_guid  # not a visible change (5.4)
    return {"parent_data_write_guid": str(actual), "linkage_matched": matched, "locator_before": before,
            "locator_after": dict(after_locator.entries), "changed": changed, "child_data_write_guid": str(own_guid)}


__all__ = ["SetParentResult", "set_parent"]
