"""Write semantics of VirtualDisk opened "r+b": the header update protocol, sessions that change
nothing, replay of a pending log, writes at any alignment, zeroing and discarding, where new blocks
go, and sector-exact differencing writes.

Oracles: a bytearray model of every write (what reads must return), the parent's bytes (what a
child shows where it was not written), VHDX-FORMAT.md 5.3/5.4, 8.2, 9, 11 and 12 applied to the
bytes on disk as decoded by ``rawvhdx`` (a decoder written from the spec for the tests), and the
shared fixtures' expected.json / chunk digests for the replayed dirty logs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
from helpers import copy_to, expected_params, file_digest, image_of, load_expected, shared_fixtures_dir
from rawvhdx import FULLY_PRESENT, NOT_PRESENT, PARTIALLY_PRESENT, SB_PRESENT, UNMAPPED, ZERO, read_headers, read_image

import vhdx

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def _assert_headers_consistent(path: Path) -> None:
    """Both headers valid, consecutive sequence numbers, the same GUIDs (VHDX-FORMAT.md 5.3 step 4)."""
    h1, h2 = read_headers(path)
    assert h1.valid and h2.valid
    assert abs(h1.sequence_number - h2.sequence_number) == 1
    assert (h1.file_write_guid, h1.data_write_guid, h1.log_guid) == (h2.file_write_guid, h2.data_write_guid, h2.log_guid)


def _current(path: Path):  # type: ignore[no-untyped-def]
    h1, h2 = read_headers(path)
    return h1 if h1.sequence_number > h2.sequence_number else h2


def _parent_with_data(path: Path, size: int = 8 * MiB, *, sector: int = 512, block_size: int = 2 * MiB,
                      seed: int = 1) -> bytes:
    """A dynamic parent full of random bytes (so a child that shows zeros where the parent's
    bytes belong is caught); returns its content."""
    data = random.Random(seed).randbytes(size)
    with vhdx.create(path, size, block_size=block_size, logical_sector_size=sector) as disk:
        disk.pwrite(0, data)
    return data


def _make(tmp: Path, kind: str, size: int = 8 * MiB, *, sector: int = 512, block_size: int = MiB) -> tuple[Path, bytearray]:
    """A new disk of ``kind`` and the model of what it reads."""
    path = tmp / f"{kind}.vhdx"
    if kind == "differencing":
        model = bytearray(_parent_with_data(tmp / "parent.vhdx", size, sector=sector))
        vhdx.create(path, parent=tmp / "parent.vhdx", block_size=block_size).close()
    else:
        model = bytearray(size)
        vhdx.create(path, size, disk_type=kind, block_size=block_size, logical_sector_size=sector).close()
    return path, model


# --- header update protocol (VHDX-FORMAT.md 5.3, 5.4) -----------------------------------------------


@pytest.mark.parametrize("kind", ["dynamic", "fixed", "differencing"])
def test_header_update_protocol_across_sessions(tmp_path: Path, kind: str) -> None:
    path, _ = _make(tmp_path, kind)
    before = _current(path)
    assert before.log_guid.int == 0
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(5000, b"first write")
        during = _current(path)
        _assert_headers_consistent(path)
        # Before the first byte changes: new FileWriteGuid, new DataWriteGuid (a visible change)
        # and a non-zero LogGuid.
        assert during.file_write_guid != before.file_write_guid
        assert during.data_write_guid != before.data_write_guid
        assert during.log_guid.int != 0
        assert during.sequence_number > before.sequence_number
        disk.pwrite(3 * MiB + 1, b"second write")  # later writes of the session: no new GUIDs
        disk.flush()
        assert (_current(path).file_write_guid, _current(path).data_write_guid) == (
            during.file_write_guid, during.data_write_guid)
    after = _current(path)
    _assert_headers_consistent(path)
    assert after.log_guid.int == 0  # a clean close leaves the log empty
    assert (after.file_write_guid, after.data_write_guid) == (during.file_write_guid, during.data_write_guid)
    assert after.sequence_number > during.sequence_number
    # The next session makes new ones again.
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(0, b"x")
    again = _current(path)
    assert again.file_write_guid not in (before.file_write_guid, after.file_write_guid)
    assert again.data_write_guid not in (before.data_write_guid, after.data_write_guid)
    _assert_headers_consistent(path)


def test_writing_a_child_never_touches_its_parent(tmp_path: Path) -> None:
    path, _ = _make(tmp_path, "differencing")
    parent_digest = file_digest(tmp_path / "parent.vhdx")
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(100, b"child")
        disk.write_zeroes(0, MiB)
        disk.discard(2 * MiB, MiB)
    assert file_digest(tmp_path / "parent.vhdx") == parent_digest
    with vhdx.open(path) as disk:  # and the link still holds (the parent's DataWriteGuid is unchanged)
        assert disk.parent is not None


@pytest.mark.parametrize("kind", ["dynamic", "fixed", "differencing"])
def test_open_rw_and_close_without_writing_leaves_the_file_identical(tmp_path: Path, kind: str) -> None:
    path, _ = _make(tmp_path, kind)
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(MiB - 3, b"some data")  # a written image, so there is a log history
    digest, mtime = file_digest(path), path.stat().st_mtime_ns
    with vhdx.open(path, "r+b") as disk:
        disk.read()
        disk.pread(MiB, 4096)
        list(disk.extents())
        disk.info()
        disk.flush()
    assert file_digest(path) == digest
    assert path.stat().st_mtime_ns == mtime


def _clean_fixture_ids() -> list[object]:
    wanted = ("qemu/dyn-64M-bs1M", "qemu/fixed-64M-bs8M", "qemu-iotests/test-disk2vhd",
              "dissect.hypervisor/fixed.vhdx", "qemu-iotests/iotest-dynamic-1G")
    return expected_params(lambda e: e.id in wanted)


@pytest.mark.parametrize("entry", _clean_fixture_ids())
def test_open_rw_and_close_leaves_foreign_images_identical(tmp_path: Path, entry) -> None:  # type: ignore[no-untyped-def]
    """Images made by Hyper-V, Disk2VHD (two identical headers) and qemu-img, opened writable and
    closed: not one byte changes."""
    path = copy_to(image_of(entry), tmp_path)
    digest = file_digest(path)
    with vhdx.open(path, "r+b") as disk:
        disk.pread(0, 65536)
    assert file_digest(path) == digest


def _noop_session(disk: vhdx.VirtualDisk) -> None:
    """Calls that change nothing a reader could see, and nothing in the file either."""
    bs = disk.block_size
    disk.pwrite(12345, b"")
    disk.write(b"")
    disk.write_zeroes(bs, 0)
    disk.discard(bs, 0)
    disk.discard(bs + 512, 4096)  # part of a block: a hint only, the data stays
    disk.discard(3 * bs - 512, 1024)  # straddling two blocks, covering neither
    disk.flush()


@pytest.mark.parametrize("kind", ["dynamic", "fixed", "differencing"])
def test_noop_session_changes_nothing(tmp_path: Path, kind: str) -> None:
    path, model = _make(tmp_path, kind)
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(0, b"\x5a" * (3 * MiB))
        model[: 3 * MiB] = b"\x5a" * (3 * MiB)
    digest = file_digest(path)
    with vhdx.open(path, "r+b") as disk:
        _noop_session(disk)
        if kind == "dynamic":
            # Zeroing what already reads as zero (blocks 4.. were never written).
            disk.write_zeroes(4 * MiB + 100, 5000)
        if kind == "fixed":
            disk.discard(0, 2 * MiB)  # fixed blocks are never given up (LeaveBlockAllocated)
        assert disk.read() == model
    assert file_digest(path) == digest


def test_whole_block_state_already_reached_is_a_noop(tmp_path: Path) -> None:
    path, _ = _make(tmp_path, "dynamic")
    with vhdx.open(path, "r+b") as disk:
        disk.write_zeroes(0, MiB)
        disk.discard(MiB, MiB)
    digest = file_digest(path)
    with vhdx.open(path, "r+b") as disk:
        disk.write_zeroes(0, MiB)
        disk.discard(MiB, MiB)
    assert file_digest(path) == digest


# --- pending logs (shared dirty-log fixtures) -----------------------------------------------------------


def _assert_chunks(disk: vhdx.VirtualDisk, entry) -> None:  # type: ignore[no-untyped-def]
    """The disk's content is entry.raw_sha256: every 1 MiB chunk the chunks json lists has its
    digest, every other chunk is zero, and the json's own digest is raw_sha256."""
    data = json.loads((shared_fixtures_dir().parent / entry.chunks).read_text())
    chunk = int(data["chunk_size"])
    nonzero = {int(k): v for k, v in data["nonzero"].items()}
    whole = hashlib.sha256() if disk.size <= 2 * GiB else None
    step = 64 * chunk
    buf = bytearray(step)
    view = memoryview(buf)
    disk.seek(0)
    pos = 0
    while pos < disk.size:
        n = disk.readinto(view)
        assert n > 0
        if whole is not None:
            whole.update(view[:n])
        arr = np.frombuffer(buf, dtype=np.uint8, count=n)
        for i in range(0, n, chunk):
            index = (pos + i) // chunk
            piece = arr[i : i + chunk]
            if index in nonzero:
                assert hashlib.sha256(piece).hexdigest() == nonzero[index], f"chunk {index}"
            else:
                assert not piece.any(), f"chunk {index} should be zero"
        pos += n
    assert pos == entry.virtual_size
    if whole is not None:
        assert whole.hexdigest() == entry.raw_sha256
    for key in ("sha256", "raw_sha256", "whole_sha256"):
        if key in data:
            assert data[key] == entry.raw_sha256


DIRTY = expected_params(lambda e: bool(e.raw.get("log_needs_replay")))


@pytest.mark.parametrize("entry", DIRTY)
def test_pending_log_is_replayed_on_disk_by_a_writable_open(tmp_path: Path, entry) -> None:  # type: ignore[no-untyped-def]
    path = copy_to(image_of(entry), tmp_path)
    assert file_digest(path) == entry.image_sha256
    assert _current(path).log_guid.int != 0
    with vhdx.open(path, "r+b") as disk:
        # The log went to its final places before anything was read: the file itself is current.
        assert not disk.has_pending_log
        assert _current(path).log_guid.int == 0
        _assert_headers_consistent(path)
    assert file_digest(path) != entry.image_sha256
    with vhdx.open(path) as disk:
        assert not disk.has_pending_log
        assert disk.info().log_state == "empty"
        _assert_chunks(disk, entry)
    # Replaying again is not needed: a second writable open changes nothing.
    digest = file_digest(path)
    vhdx.open(path, "r+b").close()
    assert file_digest(path) == digest


@pytest.mark.parametrize("entry", DIRTY)
def test_writes_after_replay_land_on_the_replayed_image(tmp_path: Path, entry) -> None:  # type: ignore[no-untyped-def]
    path = copy_to(image_of(entry), tmp_path)
    rng = random.Random(7)
    with vhdx.open(path, "r+b") as disk:
        offsets = [0, disk.block_size - 3, disk.size - 700, rng.randrange(0, disk.size - 70000)]
        before = {o: disk.pread(o - 100 if o >= 100 else o, 70000) for o in offsets}
        writes = [(o, rng.randbytes(600)) for o in offsets]
        for o, data in writes:
            disk.pwrite(o, data)
    with vhdx.open(path) as disk:
        for o, data in writes:
            assert disk.pread(o, len(data)) == data
        # Around each write, the replayed contents are still there.
        o = offsets[3]
        assert disk.pread(o - 100, 100) == before[o][:100]
        assert disk.pread(o + 600, 1000) == before[o][700:1700]


# --- writes of any alignment ---------------------------------------------------------------------------


def _alignment_cases(size: int, sector: int, block: int) -> list[tuple[int, int]]:
    return [
        (0, 1), (1, 1), (sector - 1, 2), (sector, sector), (sector + 7, 3 * sector - 11),
        (4096 - 5, 10), (4096, 4096), (3 * 4096 + 100, 5 * 4096),
        (block - 1, 2), (block - 700, 1400), (block, block), (2 * block - 13, block + 26),
        (block + sector, 2 * block - 2 * sector), (size - 1, 1), (size - sector - 3, sector + 3),
        (size - 3 * block - 5, 3 * block + 5), (0, size),
    ]


@pytest.mark.parametrize("sector", [512, 4096])
@pytest.mark.parametrize("kind", ["dynamic", "fixed", "differencing"])
def test_writes_at_any_alignment_read_back(tmp_path: Path, kind: str, sector: int) -> None:
    size = 6 * MiB + 3 * sector  # the last block is partial
    path, model = _make(tmp_path, kind, size, sector=sector, block_size=MiB)
    rng = random.Random(sector)
    with vhdx.open(path, "r+b") as disk:
        for i, (offset, length) in enumerate(_alignment_cases(size, sector, MiB)):
            data = rng.randbytes(length)
            if i % 2:
                disk.seek(offset)
                assert disk.write(data) == length
                assert disk.tell() == offset + length
            else:
                assert disk.pwrite(offset, data) == length
            model[offset : offset + length] = data
            lo, hi = max(0, offset - 5000), min(size, offset + length + 5000)
            assert disk.pread(lo, hi - lo) == model[lo:hi], f"after write {i} ({offset}, {length})"
            if i % 5 == 4:
                disk.flush()
        assert disk.read() == b""  # positioned at the end
        disk.seek(0)
        assert disk.read() == model
    with vhdx.open(path) as disk:
        assert disk.read() == model


def test_write_past_the_end_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    path, _ = _make(tmp_path, "dynamic", 4 * MiB)
    digest = file_digest(path)
    with vhdx.open(path, "r+b") as disk:
        for offset, length in ((4 * MiB, 1), (4 * MiB - 1, 2), (-1, 1)):
            with pytest.raises(ValueError):
                disk.pwrite(offset, b"x" * length)
        disk.seek(4 * MiB - 10)
        with pytest.raises(ValueError):
            disk.write(b"y" * 11)
        for call in (disk.write_zeroes, disk.discard):
            with pytest.raises(ValueError):
                call(4 * MiB - 512, 1024)
            with pytest.raises(ValueError):
                call(-512, 512)
    assert file_digest(path) == digest


def test_read_only_disk_refuses_writes(tmp_path: Path) -> None:
    path, _ = _make(tmp_path, "dynamic", 4 * MiB)
    digest = file_digest(path)
    with vhdx.open(path) as disk:
        assert not disk.writable()
        for call in (lambda: disk.pwrite(0, b"x"), lambda: disk.write(b"x"), lambda: disk.write_zeroes(0, 512),
                     lambda: disk.discard(0, MiB)):
            with pytest.raises(vhdx.ReadOnlyError):
                call()
    assert file_digest(path) == digest


# --- zeroing and discarding ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dynamic", "differencing"])
def test_whole_blocks_become_zero_or_unmapped(tmp_path: Path, kind: str) -> None:
    bs = MiB
    path, model = _make(tmp_path, kind, 8 * MiB, block_size=bs)
    fill = random.Random(3).randbytes(8 * MiB)
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(0, fill[: 4 * MiB])  # blocks 0-3 written; 4-7 untouched (parent's bytes, or zeros)
        model[: 4 * MiB] = fill[: 4 * MiB]
    with vhdx.open(path, "r+b") as disk:
        disk.write_zeroes(0, bs)  # written block -> ZERO
        disk.discard(bs, bs)  # written block -> UNMAPPED
        disk.write_zeroes(4 * bs, bs)  # never written block -> ZERO (hides the parent's data)
        disk.discard(5 * bs, bs)  # never written block -> UNMAPPED
        # A range with partial edges: the head edge (block 2) is written as zeros, the middle
        # block (3) changes state, the tail edge lies in block 4, already ZERO: nothing to do.
        disk.write_zeroes(2 * bs + 1000, 2 * bs)
        model[0 : 2 * bs] = bytes(2 * bs)
        model[4 * bs : 6 * bs] = bytes(2 * bs)
        model[2 * bs + 1000 : 4 * bs + 1000] = bytes(2 * bs)
        assert disk.read() == model
    img = read_image(path)
    assert img.payload_entry(0) == (ZERO, 0)  # FileOffsetMB of a ZERO entry is written as 0 (8.2)
    assert img.payload_entry(1)[0] == UNMAPPED
    assert img.payload_entry(3) == (ZERO, 0)
    assert img.payload_entry(4) == (ZERO, 0)
    assert img.payload_entry(5)[0] == UNMAPPED
    assert img.payload_entry(2)[0] in (FULLY_PRESENT, PARTIALLY_PRESENT)
    with vhdx.open(path) as disk:
        assert disk.read() == model


@pytest.mark.parametrize("kind", ["dynamic", "differencing"])
def test_partial_ranges_are_written_as_zeros_and_partial_discards_keep_data(tmp_path: Path, kind: str) -> None:
    path, model = _make(tmp_path, kind, 4 * MiB, block_size=MiB)
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(0, b"\x77" * MiB)
        model[:MiB] = b"\x77" * MiB
        disk.flush()  # the BAT reaches the file through the log at a flush
        before = read_image(path).payload_entry(0) if kind == "dynamic" else None
        disk.write_zeroes(1000, 3000)  # inside a present block
        model[1000:4000] = bytes(3000)
        disk.write_zeroes(2 * MiB + 10, 700)  # inside a block that reads the parent (or zeros)
        model[2 * MiB + 10 : 2 * MiB + 710] = bytes(700)
        disk.discard(5000, 100000)  # partial: a hint, the bytes stay
        disk.discard(3 * MiB + 512, 4096)
        assert disk.read() == model
    img = read_image(path)
    if kind == "dynamic":
        assert img.payload_entry(0) == (FULLY_PRESENT, before[1])  # type: ignore[index]
        # Zeroing part of a block that already reads as zero allocates nothing.
        assert img.payload_entry(2) == (NOT_PRESENT, 0)
    else:
        state, _ = img.payload_entry(2)
        assert state == PARTIALLY_PRESENT
        bits = img.sector_bits(2)
        assert np.flatnonzero(bits).tolist() == [0, 1]  # bytes 10..709 are sectors 0 and 1
    with vhdx.open(path) as disk:
        assert disk.read() == model


def test_fixed_disk_blocks_never_move(tmp_path: Path) -> None:
    size, bs = 8 * MiB + 4096, MiB
    path, model = _make(tmp_path, "fixed", size, block_size=bs)
    bat_before = read_image(path).payload_entries()
    file_size = path.stat().st_size
    rng = random.Random(11)
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(0, b"\xee" * size)
        model[:] = b"\xee" * size
        disk.write_zeroes(bs, bs)  # a whole block: written as zeros, not made ZERO
        model[bs : 2 * bs] = bytes(bs)
        disk.discard(3 * bs, 2 * bs)  # whole blocks: a fixed disk keeps them, and their data
        disk.write_zeroes(5 * bs + 7, 3 * bs - 7)
        model[5 * bs + 7 : 8 * bs] = bytes(3 * bs - 7)
        for _ in range(30):
            offset = rng.randrange(size)
            length = rng.randrange(1, min(3 * bs, size - offset) + 1)
            action = rng.choice(["write", "zero", "discard"])
            if action == "write":
                data = rng.randbytes(length)
                disk.pwrite(offset, data)
                model[offset : offset + length] = data
            elif action == "zero":
                disk.write_zeroes(offset, length)
                model[offset : offset + length] = bytes(length)
            else:
                disk.discard(offset, length)
            if rng.random() < 0.3:
                disk.flush()
        assert disk.read() == model
    assert read_image(path).payload_entries() == bat_before
    assert all(state == FULLY_PRESENT for state, _ in bat_before)
    assert path.stat().st_size == file_size
    with vhdx.open(path) as disk:
        assert disk.read() == model


# --- where new blocks go -------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [MiB, 2 * MiB, 32 * MiB])
def test_dynamic_growth_appends_aligned_blocks_at_the_end(tmp_path: Path, block_size: int) -> None:
    size = 8 * block_size
    path, model = _make(tmp_path, "dynamic", size, block_size=block_size)
    img = read_image(path)
    end = img.file_size
    order = [5, 0, 7, 2]
    with vhdx.open(path, "r+b") as disk:
        for block in order:
            offset = block * block_size + block_size // 3
            disk.pwrite(offset, b"grow")
            model[offset : offset + 4] = b"grow"
        disk.write_zeroes(7 * block_size, block_size)  # block 7 is given up (its space is leaked)
        model[7 * block_size : 8 * block_size] = bytes(block_size)
        disk.pwrite(3 * block_size, b"after a trim")  # the freed space is not reused
        model[3 * block_size : 3 * block_size + 12] = b"after a trim"
    img = read_image(path)
    expected_offsets = {}
    for block in [*order, 3]:
        expected_offsets[block] = end
        end += block_size
    for block, offset in expected_offsets.items():
        if block == 7:
            assert img.payload_entry(7) == (ZERO, 0)
            continue
        assert img.payload_entry(block) == (FULLY_PRESENT, offset), f"block {block}"
        assert offset % MiB == 0
    assert img.file_size == end
    # A later session appends after everything, including the leaked block.
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(6 * block_size, b"next session")
        model[6 * block_size : 6 * block_size + 12] = b"next session"
    img = read_image(path)
    assert img.payload_entry(6) == (FULLY_PRESENT, end)
    assert img.file_size == end + block_size
    with vhdx.open(path) as disk:
        assert disk.read() == model


# --- differencing: sector-exact writes -------------------------------------------------------------------


@pytest.mark.parametrize("sector", [512, 4096])
def test_differencing_write_sets_only_the_written_sectors(tmp_path: Path, sector: int) -> None:
    path, model = _make(tmp_path, "differencing", 8 * MiB, sector=sector, block_size=MiB)
    parent = bytes(model)
    spb = MiB // sector
    with vhdx.open(path, "r+b") as disk:
        # One whole sector, inside a 4 KiB page whose other sectors stay the parent's (512 B sectors).
        disk.pwrite(3 * sector, b"\x01" * sector)
        model[3 * sector : 4 * sector] = b"\x01" * sector
        # 10 bytes in the middle of a sector: the rest of that sector comes from the parent.
        disk.pwrite(40 * sector + 100, b"\x02" * 10)
        model[40 * sector + 100 : 40 * sector + 110] = b"\x02" * 10
        # Unaligned at both ends, over several sectors, crossing into the next block.
        start = MiB - 2 * sector - 7
        disk.pwrite(start, b"\x03" * (3 * sector + 20))
        model[start : start + 3 * sector + 20] = b"\x03" * (3 * sector + 20)
        assert disk.read() == model
    img = read_image(path)
    assert img.payload_entry(0)[0] == PARTIALLY_PRESENT
    assert img.payload_entry(1)[0] == PARTIALLY_PRESENT
    assert img.bitmap_entry(0)[0] == SB_PRESENT
    assert np.flatnonzero(img.sector_bits(0)).tolist() == [3, 40, spb - 3, spb - 2, spb - 1]
    assert np.flatnonzero(img.sector_bits(1)).tolist() == [0, 1] if sector == 512 else [0]
    for block in range(2, 8):
        assert img.payload_entry(block) == (NOT_PRESENT, 0)
    # The child's own bytes of a present sector hold exactly that sector (edges from the parent).
    _, block0 = img.payload_entry(0)
    with open(path, "rb") as f:
        f.seek(block0 + 40 * sector)
        assert f.read(sector) == bytes(model[40 * sector : 41 * sector])
    assert model[40 * sector : 40 * sector + 100] == parent[40 * sector : 40 * sector + 100]
    with vhdx.open(path) as disk:
        assert disk.read() == model


def test_differencing_unaligned_edges_come_from_the_grandparent(tmp_path: Path) -> None:
    """Depth 3: the edge sectors of a child's unaligned write are completed from whichever layer
    answers them (here the grandparent, through an empty middle layer)."""
    base = tmp_path / "base.vhdx"
    model = bytearray(_parent_with_data(base, 4 * MiB, block_size=4 * MiB))
    vhdx.create(tmp_path / "mid.vhdx", parent=base, block_size=MiB).close()
    with vhdx.open(tmp_path / "mid.vhdx", "r+b") as mid:
        mid.pwrite(MiB + 100, b"\x44" * 300)
        model[MiB + 100 : MiB + 400] = b"\x44" * 300
    vhdx.create(tmp_path / "top.vhdx", parent=tmp_path / "mid.vhdx", block_size=2 * MiB).close()
    with vhdx.open(tmp_path / "top.vhdx", "r+b") as top:
        top.pwrite(7, b"\x55" * 3)  # sector 0: bytes 0-6 and 10-511 from the base
        top.pwrite(MiB + 50, b"\x66" * 100)  # sector 2048: mid's bytes 100-149 survive around it
        model[7:10] = b"\x55" * 3
        model[MiB + 50 : MiB + 150] = b"\x66" * 100
        assert top.read() == model
    with vhdx.open(tmp_path / "top.vhdx") as top:
        assert len(top.chain) == 3
        assert top.read() == model


@pytest.mark.parametrize("how", ["write_zeroes", "discard"])
def test_writing_into_a_zeroed_child_block_does_not_show_the_parent(tmp_path: Path, how: str) -> None:
    path, model = _make(tmp_path, "differencing", 4 * MiB, block_size=MiB)
    with vhdx.open(path, "r+b") as disk:
        getattr(disk, how)(MiB, MiB)
        model[MiB : 2 * MiB] = bytes(MiB)
        disk.pwrite(MiB + 1000, b"\x99" * 10)
        model[MiB + 1000 : MiB + 1010] = b"\x99" * 10
        assert disk.read() == model
    with vhdx.open(path) as disk:
        assert disk.read() == model


def test_differencing_whole_block_write_reads_back_and_needs_no_parent(tmp_path: Path) -> None:
    path, model = _make(tmp_path, "differencing", 4 * MiB, block_size=MiB)
    data = os.urandom(MiB)
    with vhdx.open(path, "r+b") as disk:
        disk.pwrite(2 * MiB, data)
    model[2 * MiB : 3 * MiB] = data
    img = read_image(path)
    state, _ = img.payload_entry(2)
    # Either form is valid (VHDX-FORMAT.md 12 step 4): FULLY_PRESENT, or partial with every bit set.
    assert state == FULLY_PRESENT or (state == PARTIALLY_PRESENT and img.sector_bits(2).all())
    with vhdx.open(path) as disk:
        assert disk.read() == model
        extents = list(disk.extents(2 * MiB, MiB))
        assert [(e.state, e.depth) for e in extents] == [("data", 0)]


def test_dirty_log_fixtures_exist() -> None:
    """The pending-log tests above must not pass by having nothing to run."""
    assert sum(1 for e in load_expected() if e.raw.get("log_needs_replay")) >= 2
