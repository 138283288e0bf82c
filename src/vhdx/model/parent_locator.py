"""Parent locator model: key/value entries, linkage GUIDs, path candidates.

References: MS-VHDX 2.6.2.6; VHDX-FORMAT.md 7.5-7.7.
"""

from __future__ import annotations

import ntpath
import os
import posixpath
import uuid
from dataclasses import dataclass

from ..constants import (
    MAX_PARENT_LOCATOR_ENTRIES,
    PARENT_KEY_ABSOLUTE_WIN32_PATH,
    PARENT_KEY_LINKAGE,
    PARENT_KEY_LINKAGE2,
    PARENT_KEY_RELATIVE_PATH,
    PARENT_KEY_VOLUME_PATH,
    PARENT_PATH_KEYS,
    VHDX_PARENT_LOCATOR_TYPE_GUID,
)
from ..errors import CorruptStructureError, UnsupportedError
from ..structs.metadata import (
    PARENT_LOCATOR_ENTRY,
    PARENT_LOCATOR_ENTRY_SIZE,
    PARENT_LOCATOR_HEADER,
    PARENT_LOCATOR_HEADER_SIZE,
)
from ._decode import build_struct, parse_struct

STRUCTURE = "parent locator"


@dataclass(frozen=True, slots=True)
class ParentLocator:
    locator_type: uuid.UUID
    entries: tuple[tuple[str, str], ...]  # (key, value), in file order

    def get(self, key: str) -> str | None:
        for k, v in self.entries:
            if k == key:
                return v
        return None

    @property
    def linkages(self) -> tuple[uuid.UUID, ...]:
        """Acceptable parent DataWriteGuids: parent_linkage, and parent_linkage2 when non-zero."""
        result = []
        for key in (PARENT_KEY_LINKAGE, PARENT_KEY_LINKAGE2):
            text = self.get(key)
            if text is None:
                continue
            guid = parse_guid_text(text)
            if guid is not None and guid.int != 0:
                result.append(guid)
        return tuple(result)

    @property
    def paths(self) -> dict[str, str]:
        return {k: v for k, v in self.entries if k in PARENT_PATH_KEYS}


def parse_guid_text(text: str) -> uuid.UUID | None:
    """Parse ``{83ed0ec3-...}`` in any case, with or without braces; None if not a GUID."""
    try:
        return uuid.UUID(text.strip().strip("{}"))
    except ValueError:
        return None


def parse_parent_locator(data: bytes, offset: int) -> ParentLocator:
    """Decode a parent locator item (``data`` is the whole item, found at file ``offset``).

    Raises:
        CorruptStructureError: entries point outside the item, strings are not UTF-16LE, keys repeat,
            or the parent_linkage key is missing or not a GUID.
        UnsupportedError: the locator type is not the VHDX one.
    """
    head = parse_struct(PARENT_LOCATOR_HEADER, data[:PARENT_LOCATOR_HEADER_SIZE], structure=STRUCTURE, offset=offset)
    if head.locator_type != VHDX_PARENT_LOCATOR_TYPE_GUID:
        raise UnsupportedError(f"unknown parent locator type {head.locator_type}", structure=STRUCTURE, offset=offset)
    count = head.key_value_count
    if PARENT_LOCATOR_HEADER_SIZE + count * PARENT_LOCATOR_ENTRY_SIZE > len(data):
        raise CorruptStructureError(f"{count} key/value entries do not fit in a {len(data)}-byte item",
                                    structure=STRUCTURE, offset=offset)
    if count > MAX_PARENT_LOCATOR_ENTRIES:
        raise UnsupportedError(f"{count} key/value entries (this implementation reads at most "
                               f"{MAX_PARENT_LOCATOR_ENTRIES})", structure=STRUCTURE, offset=offset)
    entries: list[tuple[str, str]] = []
    keys: set[str] = set()
    # Strings of an honest locator lie side by side in the item, so together they are no longer
    # than it; entries pointing many times at one long string would decode it once each.
    budget = len(data)
    for i in range(count):
        at = PARENT_LOCATOR_HEADER_SIZE + i * PARENT_LOCATOR_ENTRY_SIZE
        e = parse_struct(PARENT_LOCATOR_ENTRY, data[at : at + PARENT_LOCATOR_ENTRY_SIZE], structure=STRUCTURE,
                         offset=offset + at)
        budget -= e.key_length + e.value_length
        if budget < 0:
            raise CorruptStructureError("the key and value strings are longer together than the item (they overlap)",
                                        structure=STRUCTURE, offset=offset + at)
        key = _string(data, e.key_offset, e.key_length, offset + at)
        value = _string(data, e.value_offset, e.value_length, offset + at)
        if key in keys:
            raise CorruptStructureError(f"key {key!r} appears twice", structure=STRUCTURE, offset=offset + at)
        keys.add(key)
        entries.append((key, value))
    locator = ParentLocator(head.locator_type, tuple(entries))
    linkage = locator.get(PARENT_KEY_LINKAGE)
    if linkage is None or parse_guid_text(linkage) is None:
        raise CorruptStructureError("parent_linkage is missing or not a GUID", structure=STRUCTURE, offset=offset)
    if not locator.paths:
        raise CorruptStructureError("no relative_path, volume_path or absolute_win32_path key",
                                    structure=STRUCTURE, offset=offset)
    return locator


def _string(data: bytes, start: int, length: int, where: int) -> str:
    if start == 0 or length == 0 or length % 2 or start + length > len(data):
        raise CorruptStructureError(f"string at item offset {start} length {length} is invalid",
                                    structure=STRUCTURE, offset=where)
    try:
        return data[start : start + length].decode("utf-16-le")
    except UnicodeDecodeError as err:
        raise CorruptStructureError(f"string is not UTF-16LE ({err.reason})", structure=STRUCTURE, offset=where) from None


def build_parent_locator(entries: list[tuple[str, str]]) -> bytes:
    """Return the bytes of a VHDX parent locator holding ``entries`` (key, value) in order."""
    strings = bytearray()
    table = []
    base = PARENT_LOCATOR_HEADER_SIZE + PARENT_LOCATOR_ENTRY_SIZE * len(entries)
    for key, value in entries:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        table.append({"key_offset": base + len(strings), "value_offset": base + len(strings) + len(k),
                      "key_length": len(k), "value_length": len(v)})
        strings += k + v
    out = bytearray(build_struct(PARENT_LOCATOR_HEADER, {"locator_type": VHDX_PARENT_LOCATOR_TYPE_GUID,
                                                          "reserved": 0, "key_value_count": len(entries)}))
    for e in table:
        out += build_struct(PARENT_LOCATOR_ENTRY, e)
    return bytes(out + strings)


def candidate_paths(locator: ParentLocator, child_dir: str) -> list[str]:
    """Paths at which the parent may be found, in the order to try them (VHDX-FORMAT.md 7.7).

    Windows paths are mapped for POSIX: ``\\`` becomes ``/``, a ``\\\\?\\`` prefix is dropped, and
    as a last resort the parent's file name is looked for in the child's folder.
    """
    out: list[str] = []
    names: list[str] = []
    for key in PARENT_PATH_KEYS:
        value = locator.get(key)
        if not value:
            continue
        names.append(ntpath.basename(value))
        if key == PARENT_KEY_RELATIVE_PATH:
            out.append(os.path.normpath(os.path.join(child_dir, _to_native(value))))
        elif key in (PARENT_KEY_ABSOLUTE_WIN32_PATH, PARENT_KEY_VOLUME_PATH):
            native = _to_native(_strip_extended_prefix(value))
            if os.sep == "\\" or native.startswith("/"):
                out.append(native)
    for name in names:
        if name:
            out.append(os.path.join(child_dir, name))
    unique: list[str] = []
    for path in out:
        if path not in unique:
            unique.append(path)
    return unique


def candidate_urls(locator: ParentLocator, child_url: str) -> list[str]:
    """URLs at which the parent of the image at ``child_url`` may be, on the same store, in the
    order to try them: relative_path resolved against the child's URL folder, then the parent's
    file name in that folder. Absolute Windows paths name nothing on a remote store."""
    out: list[str] = []
    relative = locator.get(PARENT_KEY_RELATIVE_PATH)
    if relative:
        out.append(url_sibling(child_url, relative.replace("\\", "/")))
    for key in PARENT_PATH_KEYS:
        value = locator.get(key)
        name = ntpath.basename(value) if value else ""
        if name:
            out.append(url_sibling(child_url, name))
    unique: list[str] = []
    for url in out:
        if url not in unique:
            unique.append(url)
    return unique


def url_sibling(base_url: str, relative: str) -> str:
    """``relative`` (with ``/`` separators) resolved against the folder of ``base_url``, on the
    same store: ``url_sibling("s3://b/vm/c.avhdx", "../base/p.vhdx") == "s3://b/base/p.vhdx"``.
    ``..`` never climbs above the store's root (bucket, host); an HTTP query string is dropped."""
    head, _, rest = base_url.rpartition("://")
    scheme = head.rpartition("::")[2].lower()
    if scheme in ("http", "https"):
        rest = rest.split("#", 1)[0].split("?", 1)[0]
    if scheme in ("memory", "file", "local"):  # no host or bucket: all of it is the path
        netloc, slash, path = "", "/", rest.lstrip("/")
    else:
        netloc, slash, path = rest.partition("/")
    folder = posixpath.dirname(slash + path) or "/"
    joined = posixpath.normpath(posixpath.join(folder, relative))
    if not joined.startswith("/"):
        joined = "/" + joined
    return f"{head}://{netloc}{joined}"


def _strip_extended_prefix(path: str) -> str:
    for prefix in ("\\\\?\\UNC\\", "\\\\?\\", "\\\\.\\"):
        if path.startswith(prefix):
            rest = path[len(prefix):]
            return "\\\\" + rest if prefix.endswith("UNC\\") else rest
    return path


def _to_native(path: str) -> str:
    if os.sep == "\\":
        return path
    return path.replace("\\", posixpath.sep)


__all__ = ["ParentLocator", "build_parent_locator", "candidate_paths", "candidate_urls", "parse_guid_text",
           "parse_parent_locator", "url_sibling",
           "PARENT_KEY_ABSOLUTE_WIN32_PATH", "PARENT_KEY_VOLUME_PATH"]
