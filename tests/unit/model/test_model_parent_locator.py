"""Parent locator model: parsing (VHDX-FORMAT.md 7.5, 7.6), linkage GUIDs and the POSIX mapping of
the path keys (7.7 step 1)."""

from __future__ import annotations

import os
import struct
import uuid

import pytest

from vhdx.constants import VHDX_PARENT_LOCATOR_TYPE_GUID
from vhdx.errors import CorruptStructureError, TruncatedError, UnsupportedError
from vhdx.model.parent_locator import (
    ParentLocator,
    build_parent_locator,
    candidate_paths,
    parse_guid_text,
    parse_parent_locator,
)
from vhdx.structs.metadata import PARENT_LOCATOR_ENTRY_SIZE, PARENT_LOCATOR_HEADER_SIZE

LINK = uuid.UUID("83ed0ec3-24c8-49a6-a959-5e4bf1288bfb")
LINK2 = uuid.UUID("0b1c2d3e-4f50-4a6b-8c7d-8e9fa0b1c2d3")
OFFSET = 0x310000
posix_only = pytest.mark.skipif(os.sep != "/", reason="maps Windows paths onto POSIX paths")


def locator(*entries: tuple[str, str]) -> ParentLocator:
    return parse_parent_locator(build_parent_locator(list(entries)), OFFSET)


def linkage(guid: uuid.UUID = LINK) -> tuple[str, str]:
    return ("parent_linkage", "{" + str(guid) + "}")


HYPER_V = [  # all five keys, as Hyper-V writes them (VHDX-FORMAT.md 7.6)
    linkage(),
    ("parent_linkage2", "{00000000-0000-0000-0000-000000000000}"),
    ("relative_path", ".\\parent.vhdx"),
    ("volume_path", "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\vms\\parent.vhdx"),
    ("absolute_win32_path", "C:\\vms\\parent.vhdx"),
]


def test_roundtrip_keeps_order_and_values() -> None:
    loc = locator(*HYPER_V)
    assert loc.locator_type == VHDX_PARENT_LOCATOR_TYPE_GUID
    assert loc.entries == tuple(HYPER_V)
    assert loc.get("relative_path") == ".\\parent.vhdx"
    assert loc.get("missing") is None
    assert set(loc.paths) == {"relative_path", "volume_path", "absolute_win32_path"}
    # A zero parent_linkage2 is "unused", not a second identity.
    assert loc.linkages == (LINK,)


def test_layout_of_built_locator() -> None:
    raw = build_parent_locator([("ab", "xyz")])
    assert raw[:16] == VHDX_PARENT_LOCATOR_TYPE_GUID.bytes_le
    assert struct.unpack_from("<HH", raw, 16) == (0, 1)
    key_offset, value_offset, key_length, value_length = struct.unpack_from("<IIHH", raw, PARENT_LOCATOR_HEADER_SIZE)
    assert (key_length, value_length) == (4, 6)
    assert raw[key_offset : key_offset + key_length].decode("utf-16-le") == "ab"
    assert raw[value_offset : value_offset + value_length].decode("utf-16-le") == "xyz"


@pytest.mark.parametrize("text", [
    "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}", "{83ED0EC3-24C8-49A6-A959-5E4BF1288BFB}",
    "83ed0ec3-24c8-49a6-a959-5e4bf1288bfb", " {83ed0ec3-24c8-49a6-a959-5e4bf1288bfb} "])
def test_linkage_text_forms(text: str) -> None:
    assert parse_guid_text(text) == LINK
    assert locator(("parent_linkage", text), ("relative_path", "p.vhdx")).linkages == (LINK,)


def test_second_linkage_is_accepted() -> None:
    loc = locator(linkage(), ("parent_linkage2", "{" + str(LINK2) + "}"), ("absolute_win32_path", "C:\\p.vhdx"))
    assert loc.linkages == (LINK, LINK2)


@pytest.mark.parametrize("text", ["", "{}", "not a guid", "{83ed0ec3-24c8-49a6-a959}"])
def test_bad_guid_text(text: str) -> None:
    assert parse_guid_text(text) is None


def patched(raw: bytes, at: int, fmt: str, *values: int) -> bytes:
    buf = bytearray(raw)
    struct.pack_into(fmt, buf, at, *values)
    return bytes(buf)


GOOD = build_parent_locator([linkage(), ("relative_path", ".\\p.vhdx")])
ENTRY0 = PARENT_LOCATOR_HEADER_SIZE
ENTRY1 = PARENT_LOCATOR_HEADER_SIZE + PARENT_LOCATOR_ENTRY_SIZE
KEY_OFFSET, VALUE_OFFSET, KEY_LENGTH, VALUE_LENGTH = 0, 4, 8, 10


def with_string(raw: bytes, entry: int, field: int, data: bytes) -> bytes:
    """Append ``data`` to the item and point the field (key or value) of ``entry`` at it."""
    length_field = KEY_LENGTH if field == KEY_OFFSET else VALUE_LENGTH
    out = patched(raw, entry + field, "<I", len(raw))
    out = patched(out, entry + length_field, "<H", len(data))
    return out + data


# (item bytes, expected error) -- each breaks one rule of 7.5/7.6.
BAD = [
    ("unknown locator type", uuid.UUID(int=5).bytes_le + GOOD[16:], UnsupportedError),
    ("header truncated", GOOD[:10], TruncatedError),
    ("count too large", patched(GOOD, 18, "<H", 0xFFFF), CorruptStructureError),
    ("count one too many", patched(GOOD, 18, "<H", 3), CorruptStructureError),
    ("key offset 0", patched(GOOD, ENTRY0 + KEY_OFFSET, "<I", 0), CorruptStructureError),
    ("value offset 0", patched(GOOD, ENTRY0 + VALUE_OFFSET, "<I", 0), CorruptStructureError),
    ("key length 0", patched(GOOD, ENTRY0 + KEY_LENGTH, "<H", 0), CorruptStructureError),
    ("value length 0", patched(GOOD, ENTRY1 + VALUE_LENGTH, "<H", 0), CorruptStructureError),
    ("odd key length", patched(GOOD, ENTRY0 + KEY_LENGTH, "<H", 3), CorruptStructureError),
    ("value past the end", patched(GOOD, ENTRY1 + VALUE_OFFSET, "<I", len(GOOD) - 2), CorruptStructureError),
    ("huge value offset", patched(GOOD, ENTRY1 + VALUE_OFFSET, "<I", 0xFFFFFFF0), CorruptStructureError),
    ("lone surrogate in a value", with_string(GOOD, ENTRY1, VALUE_OFFSET, b"\x00\xd8a\x00"), CorruptStructureError),
    ("duplicate key", build_parent_locator([linkage(), ("relative_path", "a"), ("relative_path", "b")]),
     CorruptStructureError),
    ("missing parent_linkage", build_parent_locator([("relative_path", ".\\p.vhdx")]), CorruptStructureError),
    ("parent_linkage in upper case key", build_parent_locator([("PARENT_LINKAGE", "{" + str(LINK) + "}"),
                                                               ("relative_path", "p")]), CorruptStructureError),
    ("parent_linkage not a guid", build_parent_locator([("parent_linkage", "parent"), ("relative_path", "p")]),
     CorruptStructureError),
    ("no path key", build_parent_locator([linkage()]), CorruptStructureError),
    ("only unknown keys", build_parent_locator([linkage(), ("path", "p.vhdx")]), CorruptStructureError),
]


@pytest.mark.parametrize("raw,error", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_locators(raw: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as info:
        parse_parent_locator(raw, OFFSET)
    assert type(info.value) is error
    assert info.value.structure == "parent locator"


def test_strings_may_overlap_and_be_shared() -> None:
    # Nothing forbids two entries pointing at the same bytes; only uniqueness of keys matters.
    raw = build_parent_locator([linkage(), ("relative_path", "p.vhdx"), ("volume_path", "p.vhdx")])
    loc = parse_parent_locator(raw, OFFSET)
    assert loc.get("volume_path") == loc.get("relative_path") == "p.vhdx"


def test_non_ascii_paths() -> None:
    loc = locator(linkage(), ("relative_path", ".\\dïsk ☃.vhdx"))
    assert loc.get("relative_path") == ".\\dïsk ☃.vhdx"


@posix_only
@pytest.mark.parametrize(("entries", "expected"), [
    ([("relative_path", ".\\x.vhdx")], ["/vm/child/x.vhdx"]),
    ([("relative_path", "..\\dir\\x.vhdx")], ["/vm/dir/x.vhdx", "/vm/child/x.vhdx"]),
    ([("relative_path", "x.vhdx")], ["/vm/child/x.vhdx"]),
    ([("absolute_win32_path", "C:\\dir\\x.vhdx")], ["/vm/child/x.vhdx"]),
    ([("absolute_win32_path", "\\\\?\\C:\\dir\\x.vhdx")], ["/vm/child/x.vhdx"]),
    ([("volume_path", "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\vms\\x.vhdx")], ["/vm/child/x.vhdx"]),
    # A POSIX-style absolute path (written by a tool on Linux) is usable as is.
    ([("absolute_win32_path", "/srv/images/x.vhdx")], ["/srv/images/x.vhdx", "/vm/child/x.vhdx"]),
    # Order: relative, volume, absolute, then the file names in the child's folder, without repeats.
    ([("absolute_win32_path", "/srv/a.vhdx"), ("relative_path", "..\\b\\b.vhdx")],
     ["/vm/b/b.vhdx", "/srv/a.vhdx", "/vm/child/b.vhdx", "/vm/child/a.vhdx"]),
], ids=["dot-relative", "dotdot-relative", "bare-relative", "win32", "win32-extended", "volume", "posix-abs",
        "order"])
def test_candidate_paths_on_posix(entries: list[tuple[str, str]], expected: list[str]) -> None:
    assert candidate_paths(locator(linkage(), *entries), "/vm/child") == expected


@posix_only
def test_candidate_paths_ignore_empty_values() -> None:
    loc = ParentLocator(VHDX_PARENT_LOCATOR_TYPE_GUID, (linkage(), ("relative_path", ""), ("absolute_win32_path", "C:\\x.vhdx")))
    assert candidate_paths(loc, "/vm") == ["/vm/x.vhdx"]


@posix_only
def test_candidate_paths_of_hyper_v_locator() -> None:
    paths = candidate_paths(locator(*HYPER_V), "/vm/child")
    assert paths[0] == "/vm/child/parent.vhdx"
    assert paths == ["/vm/child/parent.vhdx"]  # every key names the same file in the child's folder


@posix_only
def test_candidate_paths_unc() -> None:
    # Where a UNC share is mounted is unknowable; the child's folder is still tried, last.
    paths = candidate_paths(locator(linkage(), ("absolute_win32_path", "\\\\?\\UNC\\server\\share\\x.vhdx")), "/vm/c")
    assert paths[-1] == "/vm/c/x.vhdx"
    assert all("?" not in p and "\\" not in p for p in paths)
