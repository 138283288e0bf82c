"""Differencing chains: find each parent from the parent locator, check the link, guard against
cycles and absurd depth, and build the stack of engines.

References: MS-VHDX 2.6.2.6; VHDX-FORMAT.md 7.7.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..constants import MAX_CHAIN_DEPTH
from ..errors import ParentChainError, ParentMismatchError, ParentNotFoundError, RepairNeededError, VhdxError
from ..model.parent_locator import candidate_paths, candidate_urls
from .engine import BlockEngine
from .image import Image, load_image
from .journal import replay_to_disk
from .source import FileSource, RandomAccess, RemoteSource, is_url, source_identity
from .writer import WritableEngine


@dataclass
class ChainOptions:
    """How parents are found and checked."""

    parent_search: Sequence[str | os.PathLike[str]] = ()
    # An explicit parent for the top image (a path, or an already built engine).
    parent: str | os.PathLike[str] | BlockEngine | None = None
    ignore_id_mismatch: bool = False
    require_parent: bool = True
    writable: bool = False  # the top image is opened for writing (its parents never are)
    allow_damaged: bool = False  # write even though the open found damage (Image.damage)
    seen: set[tuple[object, ...]] = field(default_factory=set)


def _identity(source: RandomAccess) -> tuple[object, ...] | None:
    return source_identity(source)  # (device, inode), or (protocol, path) for a URL


def build_engine(source: RandomAccess, options: ChainOptions, depth: int = 0) -> BlockEngine:
    """Load ``source`` and, for a differencing disk, its whole chain of parents.

    Raises:
        ParentNotFoundError, ParentMismatchError, ParentChainError, and any load error.
    """
    ident = _identity(source)
    if ident is not None:
        if ident in options.seen:
            raise ParentChainError("the chain of parents loops back to this file", image=source.name)
        options.seen.add(ident)
    writable = options.writable and depth == 0
    image = load_image(source)
    if writable and image.log is not None:
        # A writable open replays the log in place first (MS-VHDX 2.3.3), then reads the file anew.
        # A LogGuid without a complete sequence (a writer died before its first entry was
        # durable) is cleared the same way, with nothing to replay.
        replay_to_disk(source, image.headers.current, image.headers.current_index, image.log)
        image = load_image(source)
    if writable and image.damage and not options.allow_damaged:
        # Issue #7: a writer builds on the metadata it finds; where reads tolerate damage, writes
        # could spread it (a new BAT beside a bad region table copy, ...). Refuse before the
        # first byte changes.
        raise RepairNeededError(f"{'; '.join(image.damage)}: writing is refused until the image is repaired "
                                "('vhdx check --repair') or opened with allow_damaged=True", image=source.name)
    engine_class = WritableEngine if writable else BlockEngine
    if not image.metadata.has_parent:
        return engine_class(image)
    if depth >= MAX_CHAIN_DEPTH:
        raise ParentChainError(f"the chain of parents is deeper than {MAX_CHAIN_DEPTH}", image=source.name)
    explicit = options.parent
    options.parent = None  # an explicit parent applies to the top image only
    try:
        if isinstance(explicit, BlockEngine):
            parent = explicit
        else:
            parent = _open_parent(image, explicit, options, depth)
    except ParentNotFoundError as err:
        if options.require_parent or writable:
            raise
        return BlockEngine(image, None, parent_missing=err.message)
    owned = not isinstance(explicit, BlockEngine)
    try:
        check_link(image, parent.image, ignore_id_mismatch=options.ignore_id_mismatch)
    except VhdxError:
        if owned:
            parent.close()
        raise
    return engine_class(image, parent, owns_parent=owned)


def _open_parent(image: Image, explicit: str | os.PathLike[str] | None, options: ChainOptions, depth: int) -> BlockEngine:
    if explicit is not None:
        candidates = [os.fspath(explicit)]
    else:
        candidates = parent_candidates(image, options.parent_search)
    for path in candidates:
        source: RandomAccess
        if is_url(path):
            # A URL child's parent is looked for on the same store, with the same options.
            raw = image.raw_source
            try:
                source = raw.sibling(path) if isinstance(raw, RemoteSource) else RemoteSource.open(path)
            except FileNotFoundError:
                continue
        elif not os.path.isfile(path):
            continue
        else:
            source = FileSource.open(path, writable=False)
        try:
            return build_engine(source, options, depth + 1)
        except BaseException:
            source.close()
            raise
    locator = image.metadata.parent_locator
    recorded = ", ".join(f"{k}={v}" for k, v in (locator.paths.items() if locator else ()))
    raise ParentNotFoundError(f"parent not found (locator: {recorded or 'none'}; tried: {', '.join(candidates) or 'nothing'})",
                              image=image.name, structure="parent locator")


def parent_candidates(image: Image, search: Sequence[str | os.PathLike[str]] = ()) -> list[str]:
    """Where the parent of ``image`` may be, in the order to try: the locator's paths (relative
    to the child's folder), then the parent's file name in each search folder."""
    locator = image.metadata.parent_locator
    if locator is None:
        return []
    name = image.name
    if is_url(name):
        paths = candidate_urls(locator, name)
    else:
        child_dir = os.path.dirname(os.path.abspath(name)) if not name.startswith("<") else os.getcwd()
        paths = candidate_paths(locator, child_dir)
    for folder in search:
        if is_url(folder):  # a URL folder: the parent's file name in it
            base = os.fspath(folder).rstrip("/")
            for path in candidate_urls(locator, base + "/"):
                if path.rpartition("/")[0] == base and path not in paths:
                    paths.append(path)
            continue
        for path in candidate_paths(locator, os.fspath(folder)):
            if os.path.dirname(path) == os.path.normpath(os.fspath(folder)) and path not in paths:
                paths.append(path)
    return paths


def check_link(child: Image, parent: Image, *, ignore_id_mismatch: bool = False) -> None:
    """Check that ``parent`` is the disk ``child`` was made from (VHDX-FORMAT.md 7.7 steps 3-4).

    Raises:
        ParentMismatchError: different logical sector size, or (unless ignored) a DataWriteGuid
            that matches neither parent_linkage nor parent_linkage2.
    """
    locator = child.metadata.parent_locator
    assert locator is not None
    if parent.geometry.logical_sector_size != child.geometry.logical_sector_size:
        raise ParentMismatchError(
            f"parent {parent.name} has {parent.geometry.logical_sector_size}-byte sectors, the child "
            f"{child.geometry.logical_sector_size}-byte", image=child.name, structure="parent locator")
    linkages = locator.linkages
    actual = parent.headers.current.data_write_guid
    if actual not in linkages and not ignore_id_mismatch:
        expected = " or ".join(f"{{{g}}}" for g in linkages)
        raise ParentMismatchError(
            f"parent {parent.name} has DataWriteGuid {{{actual}}} but the child expects {expected}; the parent was "
            f"modified after the child was created (override with ignore_id_mismatch)",
            image=child.name, structure="parent locator")
