"""Edit the parent locator of a differencing image in place (``set-parent``, merges).

The parent locator names the parent (paths) and pins it (``parent_linkage``: the parent's
DataWriteGuid; ``parent_linkage2``: a second acceptable identity, used by merges). Rewriting it
changes nothing a reader of the child sees, so the child's own DataWriteGuid is kept: its own
children, which store that GUID in their ``parent_linkage``, stay linked (MS-VHDX 2.2.2,
2.6.2.6; VHDX-FORMAT.md 5.4, 7.6).

References: MS-VHDX 2.6.2.6; VHDX-FORMAT.md 7.5-7.7.
"""

from __future__ import annotations

import os
import uuid
from types import EllipsisType

from ..constants import (
    PARENT_KEY_ABSOLUTE_WIN32_PATH,
    PARENT_KEY_LINKAGE,
    PARENT_KEY_LINKAGE2,
    PARENT_KEY_RELATIVE_PATH,
    PARENT_KEY_VOLUME_PATH,
)
from ..create import parent_locator_entries
from ..engine.writer import WritableEngine
from ..errors import UnsupportedError
from ..model.parent_locator import build_parent_locator


def guid_text(guid: uuid.UUID) -> str:
    """``{83ed0ec3-...}``: braces, lowercase, as the spec asks for the linkage keys (7.6)."""
    return "{" + str(guid) + "}"


def locator_entries_with(entries: tuple[tuple[str, str], ...] | list[tuple[str, str]],
                         changes: dict[str, str | None]) -> list[tuple[str, str]]:
    """``entries`` with ``changes`` applied: a value replaces the key's value in place (or is
    appended when the key is new), None removes the key; every other key is kept as it was."""
    out: list[tuple[str, str]] = []
    pending = dict(changes)
    for key, value in entries:
        if key in pending:
            new = pending.pop(key)
            if new is not None:
                out.append((key, new))
        else:
            out.append((key, value))
    out += [(k, v) for k, v in pending.items() if v is not None]
    return out


def stage_parent_locator(
    engine: WritableEngine,
    *,
    parent_path: str | os.PathLike[str] | None = None,
    linkage: uuid.UUID | None = None,
    linkage2: uuid.UUID | None | EllipsisType = ...,
) -> None:
    """Stage (not flush) a new parent locator for the differencing image open in ``engine``.

    Args:
        engine: the child, open writable.
        parent_path: the parent's new location: ``relative_path`` (from the child's folder, ``.\\``
            style) and ``absolute_win32_path`` are written as ``vhdx.create`` writes them for a
            new child, and a ``volume_path`` (which would still name the old place) is dropped.
        linkage: the new ``parent_linkage`` (the parent's DataWriteGuid).
        linkage2: the new ``parent_linkage2``; None removes the key; ``...`` keeps it as it is.

    Keys not mentioned (unknown ones included) are kept. The change is not visible to readers:
    the child's DataWriteGuid does not change. Nothing is written when the locator comes out
    identical. The caller commits with ``engine.flush()`` (or ``close()``).

    Raises:
        UnsupportedError: the image is not a differencing disk, or the new locator does not fit
            in the metadata region.
        ValueError: ``parent_path`` is given but the image was not opened from a path.
    """
    image = engine.image
    locator = image.metadata.parent_locator
    if not image.metadata.has_parent or locator is None:
        raise UnsupportedError("not a differencing disk: it has no parent locator", image=image.name,
                               structure="metadata")
    changes: dict[str, str | None] = {}
    if parent_path is not None:
        child = image.name
        if not os.path.exists(child):
            raise ValueError(f"the child {child!r} was not opened from a path: a relative parent path needs one")
        paths = dict(parent_locator_entries(child, parent_path, uuid.UUID(int=0)))
        changes[PARENT_KEY_RELATIVE_PATH] = paths[PARENT_KEY_RELATIVE_PATH]
        changes[PARENT_KEY_ABSOLUTE_WIN32_PATH] = paths[PARENT_KEY_ABSOLUTE_WIN32_PATH]
        # The volume path names the old place (a Windows volume GUID we cannot compute here); a
        # reader tries it before absolute_win32_path (7.7), so a stale one must go.
        changes[PARENT_KEY_VOLUME_PATH] = None
    if linkage is not None:
        changes[PARENT_KEY_LINKAGE] = guid_text(linkage)
    if linkage2 is not ...:
        changes[PARENT_KEY_LINKAGE2] = None if linkage2 is None else guid_text(linkage2)  # type: ignore[arg-type]
    entries = locator_entries_with(locator.entries, changes)
    engine.stage_metadata(image.metadata, build_parent_locator(entries), visible=False)


__all__ = ["guid_text", "locator_entries_with", "stage_parent_locator"]
