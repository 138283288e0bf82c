"""The shipped sample image (fixtures/sample.vhdx) holds exactly what its generator describes.

Oracle: a model of the writes. The geometry, partition list and ordered operations are taken
from the description constants in fixtures/make_sample.py; the bytes each operation writes are
re-derived here from the content rules stated in that module's docstring and in
fixtures/README.md (the generator's own rendering functions are deliberately not used). The
model is compared with what our reader returns, and, as independent readers, with qemu-img and
pyvhdi. fixtures/README.md must state the file's current SHA-256 and the model's SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import shutil
import struct
from pathlib import Path
from types import ModuleType

import pytest
from helpers import REPO_ROOT, require_module, require_tool, run

import vhdx

FIXTURES = REPO_ROOT / "fixtures"
SAMPLE = FIXTURES / "sample.vhdx"
SECTOR = 512
LINE_FORMAT = "vhdx sample sector @ 0x{:08x}\n"  # 32 bytes, repeated 16 times per sector


def _load_description() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample", FIXTURES / "make_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DESC = _load_description()


def _sector(offset: int) -> bytes:
    line = LINE_FORMAT.format(offset).encode("ascii")
    assert len(line) == 32
    return line * (SECTOR // len(line))


def _chs(lba: int) -> bytes:
    # 255 heads x 63 sectors per track; every LBA of a 64 MiB disk is below cylinder 1024.
    cylinder, head, sector = lba // (255 * 63), (lba // 63) % 255, lba % 63 + 1
    return struct.pack("<BBB", head, sector | (cylinder >> 8) << 6, cylinder & 0xFF)


def _mbr() -> bytes:
    table = b"".join(
        struct.pack("<B3sB3sII", status, _chs(first), ptype, _chs(first + count - 1), first, count)
        for status, ptype, first, count in DESC.PARTITIONS
    )
    return (
        _sector(0)[:440]
        + struct.pack("<I", DESC.DISK_SIGNATURE)
        + b"\0\0"
        + table.ljust(64, b"\0")
        + b"\x55\xaa"
    )


def _model() -> bytes:
    disk = bytearray(DESC.VIRTUAL_SIZE)
    for kind, offset, length in DESC.OPERATIONS:
        assert offset % SECTOR == 0 and length % SECTOR == 0 and offset + length <= len(disk)
        if kind == "mbr":
            data = _mbr()
        elif kind == "data":
            data = b"".join(_sector(o) for o in range(offset, offset + length, SECTOR))
        elif kind == "zero":
            data = bytes(length)
        else:
            raise AssertionError(f"operation kind {kind!r} not described by the content rules")
        assert len(data) == length
        disk[offset : offset + length] = data
    return bytes(disk)


@pytest.fixture(scope="module")
def model() -> bytes:
    return _model()


def _first_difference(actual: bytes, expected: bytes) -> str:
    for pos in range(0, min(len(actual), len(expected)), SECTOR):
        got, want = actual[pos : pos + SECTOR], expected[pos : pos + SECTOR]
        if got != want:
            return f"sector at 0x{pos:x}: got {got[:32]!r}, expected {want[:32]!r}"
    return f"lengths differ: {len(actual)} != {len(expected)}"


def test_description_exercises_what_the_sample_is_for() -> None:
    # Guards the description itself: holes, a block-straddling write and two partitions.
    block = DESC.BLOCK_SIZE
    writes = [(o, n) for kind, o, n in DESC.OPERATIONS if kind != "zero"]
    assert any(o // block != (o + n - 1) // block for o, n in writes)
    touched = {b for o, n in writes for b in range(o // block, (o + n - 1) // block + 1)}
    assert len(touched) < DESC.VIRTUAL_SIZE // block
    assert any(kind == "zero" for kind, _, _ in DESC.OPERATIONS)
    assert sorted(p[1] for p in DESC.PARTITIONS) == [0x07, 0x83]


def test_geometry() -> None:
    with vhdx.open(SAMPLE) as disk:
        assert disk.size == DESC.VIRTUAL_SIZE
        assert disk.block_size == DESC.BLOCK_SIZE
        assert disk.logical_sector_size == DESC.SECTOR_SIZE == SECTOR
        assert disk.disk_type == "dynamic"
        assert disk.parent is None
        assert not disk.has_pending_log


def test_content_matches_model(model: bytes) -> None:
    with vhdx.open(SAMPLE) as disk:
        actual = disk.read()
    assert actual == model, _first_difference(actual, model)


def test_mbr_partition_table() -> None:
    with vhdx.open(SAMPLE) as disk:
        sector0 = disk.read(SECTOR)
    assert sector0[510:] == b"\x55\xaa"
    assert struct.unpack_from("<I", sector0, 440)[0] == DESC.DISK_SIGNATURE
    entries = [struct.unpack_from("<B3sB3sII", sector0, 446 + 16 * i) for i in range(4)]
    used = [(ptype, first, count) for _, _, ptype, _, first, count in entries if ptype]
    assert used == [(ptype, first, count) for _, ptype, first, count in DESC.PARTITIONS]
    end = 1  # the MBR itself
    for _, first, count in sorted(used, key=lambda p: p[1]):
        assert first >= end and count > 0
        end = first + count
    assert end * SECTOR <= DESC.VIRTUAL_SIZE
    assert entries[2][2] == entries[3][2] == 0


def test_only_written_blocks_are_allocated() -> None:
    block = DESC.BLOCK_SIZE
    touched = {
        b for _, o, n in DESC.OPERATIONS for b in range(o // block, (o + n - 1) // block + 1)
    }
    with vhdx.open(SAMPLE) as disk:
        extents = list(disk.extents())
    position = 0
    allocated: set[int] = set()
    for extent in extents:
        assert extent.virtual_offset == position
        position += extent.length
        if extent.state == "data":
            first = extent.virtual_offset // block
            allocated.update(range(first, first + extent.length // block))
        else:
            assert extent.state in ("zero", "unallocated")
    assert position == DESC.VIRTUAL_SIZE
    assert allocated == touched


@pytest.mark.interop
def test_qemu_img_agrees_with_model(model: bytes, tmp_path: Path) -> None:
    require_tool("qemu-img")
    image = tmp_path / "sample.vhdx"  # a copy: nothing may touch the committed file
    shutil.copyfile(SAMPLE, image)
    raw = tmp_path / "model.raw"
    raw.write_bytes(model)
    check = run("qemu-img", "check", "-f", "vhdx", str(image), check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    compare = run("qemu-img", "compare", "-f", "vhdx", "-F", "raw", str(image), str(raw), check=False)
    assert compare.returncode == 0, compare.stdout + compare.stderr


@pytest.mark.interop
def test_pyvhdi_agrees_with_model(model: bytes) -> None:
    pyvhdi = require_module("pyvhdi")
    handle = pyvhdi.file()
    handle.open(str(SAMPLE))
    try:
        assert handle.get_media_size() == len(model)
        actual = handle.read_buffer_at_offset(len(model), 0)
    finally:
        handle.close()
    assert actual == model, _first_difference(actual, model)


def test_readme_records_current_hashes(model: bytes) -> None:
    text = (FIXTURES / "README.md").read_text()
    section = re.search(r"^## sample\.vhdx$(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "fixtures/README.md has no '## sample.vhdx' section"
    file_sha = re.search(r"file SHA-256: `([0-9a-f]{64})`", section.group(1))
    content_sha = re.search(r"content SHA-256: `([0-9a-f]{64})`", section.group(1))
    assert file_sha and content_sha
    assert file_sha.group(1) == hashlib.sha256(SAMPLE.read_bytes()).hexdigest(), "regenerated? update README"
    assert content_sha.group(1) == hashlib.sha256(model).hexdigest()
