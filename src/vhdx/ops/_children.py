"""Finding the differencing children of an image: the files whose parent locator leads to it.

A VHDX records its parent (relative and absolute paths, and the parent's DataWriteGuid), never its
children; the only way to find them is to look at the images around it. Merge uses this to warn
before it orphans a child (the merged-into image's DataWriteGuid changes, VHDX-FORMAT.md 5.4) and
checkpoints use it to walk a chain from its base to its newest leaf.

A file counts as a child of ``target`` when it is a differencing VHDX whose locator, resolved the
way a reader resolves it (the first candidate path that exists, VHDX-FORMAT.md 7.7 step 1), is
``target`` itself, and whose parent_linkage or parent_linkage2 is one of the DataWriteGuids given
(normally the target's current one). Files that are not readable VHDX images are skipped.

References: MS-VHDX 2.6.2.6; VHDX-FORMAT.md 7.6-7.7.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..constants import PARENT_KEY_LINKAGE
from ..engine.chain import parent_candidates
from ..engine.image import Image, load_image
from ..engine.source import FileSource
from ..errors import VhdxError
from ..model.parent_locator import parse_guid_text

# File names looked at: Hyper-V names base disks .vhdx and checkpoints .avhdx.
IMAGE_SUFFIXES = (".vhdx", ".avhdx")


@dataclass(frozen=True)
class Child:
    """A differencing image found linked to a parent.

    Attributes:
        path: the child file.
        linkages: the DataWriteGuids its locator accepts (parent_linkage, parent_linkage2).
        linkage: parent_linkage alone (None if it is not a GUID).
        data_write_guid: the child's own current DataWriteGuid (what its children link to).
    """

    path: str
    linkages: tuple[uuid.UUID, ...]
    linkage: uuid.UUID | None
    data_write_guid: uuid.UUID


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether two paths name the same existing file."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def image_files(folders: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The .vhdx/.avhdx regular files in ``folders`` (each folder once, sorted by name)."""
    seen: set[str] = set()
    out: list[str] = []
    for folder in folders:
        folder = os.path.abspath(os.fspath(folder))
        if folder in seen or not os.path.isdir(folder):
            continue
        seen.add(folder)
        for name in sorted(os.listdir(folder)):
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            path = os.path.join(folder, name)
            if os.path.isfile(path):
                out.append(path)
    return out


def load_header_and_locator(path: str) -> Image | None:
    """Load ``path`` read-only (no parent opened); None when it is not a readable VHDX."""
    try:
        source = FileSource.open(path, writable=False)
    except (OSError, ValueError):
        return None
    try:
        return load_image(source)
    except (VhdxError, OSError):
        return None
    finally:
        source.close()


def resolved_parent(image: Image, parent_search: Sequence[str | os.PathLike[str]] = ()) -> str | None:
    """The file a reader would open as ``image``'s parent (the first existing candidate)."""
    for path in parent_candidates(image, parent_search):
        if os.path.isfile(path):
            return path
    return None


def find_children(
    target: str | os.PathLike[str],
    guids: Iterable[uuid.UUID],
    *,
    folders: Iterable[str | os.PathLike[str]] = (),
    parent_search: Sequence[str | os.PathLike[str]] = (),
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> list[Child]:
    """Differencing images in ``target``'s folder (and ``folders``) linked to ``target``.

    Args:
        target: the parent image.
        guids: DataWriteGuids that count as a link (a locator accepting any of them is a child).
        folders: more folders to look in.
        parent_search: folders a reader would also search for parents (as for ``vhdx.open``).
        exclude: files not to report (the chain being worked on).

    Returns:
        The children found, sorted by path.
    """
    wanted = set(guids)
    target = os.fspath(target)
    skip = [os.fspath(p) for p in exclude] + [target]
    found: list[Child] = []
    for path in image_files([os.path.dirname(os.path.abspath(target)), *folders]):
        if any(same_file(path, s) for s in skip):
            continue
        image = load_header_and_locator(path)
        if image is None or image.metadata.parent_locator is None:
            continue
        linkages = image.metadata.parent_locator.linkages
        if not wanted.intersection(linkages):
            continue
        parent = resolved_parent(image, parent_search)
        if parent is None or not same_file(parent, target):
            continue
        primary = parse_guid_text(image.metadata.parent_locator.get(PARENT_KEY_LINKAGE) or "")
        found.append(Child(path, linkages, primary, image.headers.current.data_write_guid))
    return found


__all__ = ["Child", "IMAGE_SUFFIXES", "find_children", "image_files", "load_header_and_locator", "resolved_parent",
           "same_file"]
