"""Read-path conformance against the shared corpus of real images (shared/fixtures).

Ground truth is shared/fixtures/real/expected.json (made with qemu-img, pyvhdi and
dissect.hypervisor, see its README) and the per-chunk digests in shared/fixtures/chunks/.
For every VHDX entry we check what ``info()`` reports, the content of the whole virtual disk,
and that opening and reading never touches the image file.

Speed: the corpus holds several 6-10 GiB sparse disks. Reading them through us is fast (zeros
are filled, not read), but SHA-256 of 10 GiB takes ~8 s here. So the default content test is
exact per 1 MiB chunk instead: every chunk the chunks json lists as non-zero must have its
digest, every other chunk must be all zeros (checked with numpy, no hashing), and the json's
own whole-disk digest must be the entry's raw_sha256. That is the same statement as "the
SHA-256 of the disk is raw_sha256" and it names the chunks that differ. Disks up to 4 GiB are
also hashed whole in the same pass; the literal whole-disk SHA-256 of the larger ones is a
separate test marked slow (run by default, deselect with -m "not slow").
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    SharedFixture,
    expected_params,
    file_digest,
    fixture_path,
    image_of,
    load_expected,
    shared_fixtures_dir,
)

import vhdx
from vhdx.errors import ParentNotFoundError

FULL_HASH_LIMIT = 4 << 30  # disks up to this size are hashed whole in the default test
READ_SIZE = 64 << 20  # bytes per readinto while checking content (a multiple of the chunk size)


# --- corpus helpers -------------------------------------------------------------------------------------


def _get(entry: SharedFixture, key: str) -> Any:
    return entry.raw.get(key)


def _is_parentless_child(entry: SharedFixture) -> bool:
    return entry.kind == "differencing" and not _get(entry, "parent_file")


def _has_parent_file(entry: SharedFixture) -> bool:
    return bool(_get(entry, "parent_file"))


def _parent_entry(entry: SharedFixture) -> SharedFixture:
    """The corpus entry describing ``entry``'s parent file (for its name and digest)."""
    for other in load_expected():
        if other.file == entry.parent_file and other.kind != "differencing":
            return other
    pytest.fail(f"expected.json has no entry for {entry.parent_file}, the parent of {entry.id}")


def _chunks(entry: SharedFixture, key: str = "chunks") -> dict[str, Any] | None:
    rel = _get(entry, key)
    if not rel:
        return None
    data: dict[str, Any] = json.loads((shared_fixtures_dir().parent / rel).read_text())
    return data


def _file_state(path: Path) -> tuple[str, int, int, int]:
    st = os.stat(path)
    return (file_digest(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@contextmanager
def _untouched(files: dict[Path, str]) -> Iterator[None]:
    """Assert each file has the given SHA-256 before, and the same bytes, size, mtime and ctime after."""
    before = {p: _file_state(p) for p in files}
    for p, digest in files.items():
        assert before[p][0] == digest, f"{p} is not the image of expected.json (stale or modified cache?)"
    yield
    for p in files:
        after = _file_state(p)
        assert after == before[p], f"{p} changed while it was opened read-only: {before[p]} -> {after}"


def _pair_in(folder: Path, entry: SharedFixture) -> tuple[Path, Path]:
    """Copy a differencing child and its parent (under the name the locator records) into ``folder``."""
    parent_entry = _parent_entry(entry)
    folder.mkdir(parents=True, exist_ok=True)
    child = folder / entry.image_name
    shutil.copyfile(image_of(entry), child)
    parent = folder / entry.parent_name_on_disk
    shutil.copyfile(fixture_path(parent_entry.file, parent_entry.image_name), parent)
    return child, parent


# --- content checking -----------------------------------------------------------------------------------


def scan(disk: vhdx.VirtualDisk, on_piece: Callable[[int, memoryview], None], digest: Any = None) -> int:
    """Read the whole disk front to back in READ_SIZE pieces and call ``on_piece(offset, view)``
    on each; with ``digest``, a worker thread hashes each piece meanwhile (hashlib releases the
    GIL), so reading, checking and hashing overlap. Returns the number of bytes read."""
    buffers = (bytearray(READ_SIZE), bytearray(READ_SIZE))
    pending: Future[None] | None = None
    pos, i = 0, 0
    disk.seek(0)
    with ThreadPoolExecutor(max_workers=1) as pool:
        while True:
            view = memoryview(buffers[i])
            n = disk.readinto(view)  # the other buffer may still be being hashed
            if pending is not None:
                pending.result()  # in order, and before that buffer is reused
                pending = None
            if not n:
                break
            assert n == min(READ_SIZE, disk.size - pos), f"short read at 0x{pos:x}: {n} bytes"
            piece = view[:n]
            if digest is not None:
                pending = pool.submit(digest.update, piece)
            on_piece(pos, piece)
            pos += n
            i ^= 1
    assert disk.read(1) == b"", "the disk reads past its virtual size"
    return pos


def check_content(disk: vhdx.VirtualDisk, chunks: dict[str, Any], *, full_hash: bool) -> tuple[list[int], str | None]:
    """Read the whole disk once; return the indices of the chunks that differ from ``chunks``
    (and the SHA-256 of the whole disk when ``full_hash``)."""
    cs = chunks["chunk_size"]
    nonzero: dict[str, str] = chunks["nonzero"]
    assert READ_SIZE % cs == 0 and cs % 8 == 0
    digest = hashlib.sha256() if full_hash else None
    bad: list[int] = []

    def check(pos: int, view: memoryview) -> None:
        n = len(view)
        whole = n // cs
        # One numpy pass says which chunks hold a non-zero byte; only those expected to be
        # non-zero are hashed.
        words = np.frombuffer(view, dtype=np.uint64, count=whole * cs // 8).reshape(whole, cs // 8)
        any_set = words.any(axis=1).tolist()
        if n % cs:
            any_set.append(any(view[whole * cs : n]))
        first = pos // cs
        for i, is_set in enumerate(any_set):
            want = nonzero.get(str(first + i))
            if want is None:
                if is_set:
                    bad.append(first + i)
            elif hashlib.sha256(view[i * cs : min(n, (i + 1) * cs)]).hexdigest() != want:
                bad.append(first + i)

    assert scan(disk, check, digest) == chunks["size"]
    return bad, (digest.hexdigest() if digest is not None else None)


def assert_content(disk: vhdx.VirtualDisk, entry: SharedFixture, *, full_hash: bool | None = None) -> None:
    chunks = _chunks(entry)
    if full_hash is None:
        full_hash = entry.virtual_size <= FULL_HASH_LIMIT
    assert disk.size == entry.virtual_size
    if chunks is None:  # no per-chunk truth: the whole-disk digest is all there is
        h = hashlib.sha256()
        scan(disk, lambda pos, view: None, h)
        assert h.hexdigest() == entry.raw_sha256
        return
    # The chunk list must describe the same content as raw_sha256, or the chunk check proves nothing.
    assert chunks["sha256"] == entry.raw_sha256 and chunks["size"] == entry.virtual_size, "chunks json disagrees"
    bad, digest = check_content(disk, chunks, full_hash=full_hash)
    cs = chunks["chunk_size"]
    assert not bad, (
        f"{len(bad)} of {-(-entry.virtual_size // cs)} chunks of {cs} bytes differ from the ground truth; "
        f"first: {', '.join(f'#{i} (0x{i * cs:x})' for i in bad[:16])}"
    )
    if digest is not None:
        assert digest == entry.raw_sha256


def assert_listed_chunks(disk: vhdx.VirtualDisk, entry: SharedFixture) -> None:
    """Cheaper than assert_content: only the chunks the ground truth lists as non-zero (where a
    missing or wrong parent shows), for tests whose subject is how the parent is found."""
    chunks = _chunks(entry)
    assert chunks is not None and chunks["sha256"] == entry.raw_sha256
    cs = chunks["chunk_size"]
    bad = [int(i) for i, want in chunks["nonzero"].items()
           if hashlib.sha256(disk.pread(int(i) * cs, cs)).hexdigest() != want]
    assert chunks["nonzero"] and not bad, f"chunks differ from the ground truth: {sorted(bad)[:16]}"


# --- parametrization ----------------------------------------------------------------------------------------

ALL = expected_params()
WITH_CONTENT = expected_params(lambda e: e.raw_sha256 is not None)
LARGE = expected_params(lambda e: e.raw_sha256 is not None and e.virtual_size > FULL_HASH_LIMIT)
PARENTLESS = expected_params(_is_parentless_child)
WITH_PARENT = expected_params(_has_parent_file)


@contextmanager
def open_entry(entry: SharedFixture, tmp_path: Path) -> Iterator[tuple[vhdx.VirtualDisk, dict[Path, str]]]:
    """Open an entry the way its notes say it is meant to be read; also return the files it
    reads, with the digest each must have."""
    if _has_parent_file(entry):
        child, parent = _pair_in(tmp_path / "pair", entry)
        files = {child: entry.image_sha256, parent: _parent_entry(entry).image_sha256}
        with vhdx.open(child) as disk:
            yield disk, files
    elif _is_parentless_child(entry):
        child = tmp_path / entry.image_name  # alone in its folder: no parent can be found
        shutil.copyfile(image_of(entry), child)
        with vhdx.open(child, require_parent=False) as disk:
            yield disk, {child: entry.image_sha256}
    else:
        path = image_of(entry)
        with vhdx.open(path) as disk:
            yield disk, {path: entry.image_sha256}


# --- tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ALL)
def test_info_reports_recorded_geometry(entry: SharedFixture, tmp_path: Path) -> None:
    with open_entry(entry, tmp_path) as (disk, _files):
        info = disk.info()
        for value in (disk.size, info.virtual_size):
            assert value == entry.virtual_size
        for value in (disk.block_size, info.block_size):
            assert value == entry.block_size
        for value in (disk.logical_sector_size, info.logical_sector_size):
            assert value == entry.logical_sector_size
        for value in (disk.physical_sector_size, info.physical_sector_size):
            assert value == entry.physical_sector_size
        assert info.creator == entry.creator
        assert disk.disk_type == info.disk_type == entry.kind
        assert info.format == "vhdx"
        if entry.log_needs_replay:
            assert disk.has_pending_log is True
            assert info.log_state == "replayed in memory"
        else:
            assert disk.has_pending_log is False
            assert info.log_state != "replayed in memory"
        # The dict form is what the CLI prints as JSON: it must carry the same facts.
        d = info.to_dict()
        recorded = (entry.virtual_size, entry.block_size, entry.kind)
        assert (d["virtual_size"], d["block_size"], d["disk_type"]) == recorded
        json.dumps(d)
        if _has_parent_file(entry):  # the chain part describes the parent of the corpus
            parent_entry = _parent_entry(entry)
            assert len(info.chain) == 1
            parent_info = info.chain[0]
            assert (parent_info.creator, parent_info.virtual_size) == (parent_entry.creator, parent_entry.virtual_size)
            assert info.parent_linkage is not None
            assert uuid.UUID(info.parent_linkage) == uuid.UUID(parent_info.data_write_guid)


@pytest.mark.parametrize("entry", WITH_CONTENT)
def test_content_matches_ground_truth_and_file_is_untouched(entry: SharedFixture, tmp_path: Path) -> None:
    with open_entry(entry, tmp_path) as (disk, files), _untouched(files):
        assert_content(disk, entry)
        if entry.kind == "differencing":
            assert disk.parent is not None and len(disk.chain) == 2


@pytest.mark.slow
@pytest.mark.parametrize("entry", LARGE)
def test_whole_disk_sha256_of_large_images(entry: SharedFixture, tmp_path: Path) -> None:
    """The literal statement of expected.json for the disks over 4 GiB (the default test checks
    the same content chunk by chunk)."""
    with open_entry(entry, tmp_path) as (disk, _files):
        h = hashlib.sha256()
        assert scan(disk, lambda pos, view: None, h) == entry.virtual_size
        assert h.hexdigest() == entry.raw_sha256


@pytest.mark.parametrize("entry", PARENTLESS)
def test_differencing_child_without_its_parent(entry: SharedFixture, tmp_path: Path) -> None:
    child = tmp_path / "alone" / entry.image_name
    child.parent.mkdir()
    shutil.copyfile(image_of(entry), child)
    with _untouched({child: entry.image_sha256}):
        with pytest.raises(ParentNotFoundError):
            vhdx.open(child)
        with vhdx.open(child, require_parent=False) as disk:
            info = disk.info()
            assert disk.disk_type == "differencing" and disk.parent is None and info.parent_missing
            assert disk.size == entry.virtual_size
            locator = info.parent_locator
            assert locator is not None and info.parent_linkage == locator["parent_linkage"]
            uuid.UUID(info.parent_linkage)  # a braced GUID (MS-VHDX 2.6.2.6.1)
            extents = list(disk.extents())
            # The extents tile the disk, and whatever is not stored in the child is the parent's.
            assert extents[0].virtual_offset == 0 and extents[-1].end == disk.size
            assert all(a.end == b.virtual_offset for a, b in zip(extents, extents[1:]))
            missing = [e for e in extents if e.state == "unallocated"]
            data = [e for e in extents if e.state == "data"]
            assert missing and data
            for e in missing[:8]:
                with pytest.raises(ParentNotFoundError):
                    disk.pread(e.virtual_offset, 1)
            with pytest.raises(ParentNotFoundError):
                disk.seek(missing[0].virtual_offset)
                disk.read(1 << 20)
            own = {e.virtual_offset: disk.pread(e.virtual_offset, e.length) for e in data[:64]}

    # The paths recorded in the locator name the parent of the corpus entry that supplies it.
    pair = next((p for p in load_expected() if p.file == entry.file and _has_parent_file(p)), None)
    if pair is None:
        return
    paths = [v.replace("\\", "/") for k, v in locator.items() if k.endswith("path")]
    assert any(p.endswith("/" + pair.parent_name_on_disk) for p in paths), paths
    # What the child stores reads the same without the parent as through the whole chain (whose
    # content test_content_matches_ground_truth checks against expected.json).
    child2, _ = _pair_in(tmp_path / "pair", pair)
    with vhdx.open(child2) as chained:
        for off, blob in own.items():
            assert chained.pread(off, len(blob)) == blob


@pytest.mark.parametrize("entry", WITH_PARENT)
def test_explicit_parent_overrides_the_locator(entry: SharedFixture, tmp_path: Path) -> None:
    parent_entry = _parent_entry(entry)
    child = tmp_path / "child" / entry.image_name
    child.parent.mkdir()
    shutil.copyfile(image_of(entry), child)
    # Under a name no locator key records, in another folder.
    elsewhere = tmp_path / "elsewhere" / "renamed-parent.vhdx"
    elsewhere.parent.mkdir()
    shutil.copyfile(fixture_path(parent_entry.file, parent_entry.image_name), elsewhere)
    with _untouched({child: entry.image_sha256, elsewhere: parent_entry.image_sha256}):
        with pytest.raises(ParentNotFoundError):
            vhdx.open(child)
        with vhdx.open(child, parent=elsewhere) as disk:
            assert disk.parent is not None and os.path.samefile(disk.parent.name, elsewhere)
            assert_listed_chunks(disk, entry)
        # An already open parent disk serves as well, and stays the caller's: closing the child
        # leaves it open and usable.
        with vhdx.open(elsewhere) as parent:
            first = parent.pread(0, 1 << 20)
            with vhdx.open(child, parent=parent) as disk:
                assert_listed_chunks(disk, entry)
            assert not parent.closed and parent.pread(0, 1 << 20) == first


@pytest.mark.parametrize("entry", WITH_PARENT)
def test_parent_search_finds_the_parent_in_another_folder(entry: SharedFixture, tmp_path: Path) -> None:
    parent_entry = _parent_entry(entry)
    child = tmp_path / "child" / entry.image_name
    child.parent.mkdir()
    shutil.copyfile(image_of(entry), child)
    store = tmp_path / "store"
    store.mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    parent = store / entry.parent_name_on_disk
    shutil.copyfile(fixture_path(parent_entry.file, parent_entry.image_name), parent)
    with _untouched({child: entry.image_sha256, parent: parent_entry.image_sha256}):
        with pytest.raises(ParentNotFoundError):
            vhdx.open(child, parent_search=[empty])
        with vhdx.open(child, parent_search=[empty, store]) as disk:
            assert disk.parent is not None and os.path.samefile(disk.parent.name, parent)
            assert_listed_chunks(disk, entry)
