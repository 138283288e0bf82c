"""Remote images: ``vhdx.open(url)`` through fsspec (memory://, file://, and http:// from a loopback
server that honours Range requests), parents found next to the child on the same store, what a
64 TiB image's ``info`` fetches, the block cache's bound, and refusals (writes, missing files,
servers without byte ranges).

Ground truth: the same images read from the local files (content SHA-256, DiskInfo fields), and for
HTTP the server's own count of the bytes it sent.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import vhdx
from helpers import require_module, sha256_of_disk
from remote_support import RangeServer, file_url, http_server, memory_put, memory_remove

fsspec = require_module("fsspec")

from vhdx.constants import REMOTE_CACHE_BLOCK_SIZE  # noqa: E402
from vhdx.engine.source import RemoteSource, is_url  # noqa: E402
from vhdx.model.parent_locator import url_sibling  # noqa: E402
from vhdx.ops import check  # noqa: E402

KiB, MiB, TiB = 1 << 10, 1 << 20, 1 << 40
SCHEMES = ["memory", "file", "http"]
BIG_SIZE = 64 * TiB


def _scatter(disk: vhdx.VirtualDisk, rng: random.Random, count: int, span: int) -> None:
    """Writes of assorted sizes (some sub-sector-bitmap, some multi-block) at random places."""
    for _ in range(count):
        length = rng.choice([512, 4096, 65536, 3 * MiB // 2])
        offset = rng.randrange(0, span - length) // 512 * 512
        disk.pwrite(offset, rng.randbytes(length))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files every scheme serves:
    plain.vhdx (dynamic, data scattered), base/parent.vhdx + vm/child.avhdx (a chain whose locator
    says ..\\base\\parent.vhdx), big/empty-256m.vhdx and big/empty-32m.vhdx (64 TiB, empty)."""
    root = tmp_path_factory.mktemp("store")
    rng = random.Random(6)
    with vhdx.create(root / "plain.vhdx", 48 * MiB, block_size=2 * MiB) as disk:
        _scatter(disk, rng, 25, disk.size)
    (root / "base").mkdir()
    (root / "vm").mkdir()
    with vhdx.create(root / "base" / "parent.vhdx", 24 * MiB, block_size=2 * MiB) as disk:
        _scatter(disk, rng, 15, disk.size)
    with vhdx.create(root / "vm" / "child.avhdx", 24 * MiB, parent=root / "base" / "parent.vhdx") as disk:
        _scatter(disk, rng, 15, disk.size)
    (root / "big").mkdir()
    vhdx.create(root / "big" / "empty-256m.vhdx", BIG_SIZE, block_size=256 * MiB).close()
    vhdx.create(root / "big" / "empty-32m.vhdx", BIG_SIZE, block_size=32 * MiB).close()
    return root


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RangeServer]:
    with http_server(store) as srv:
        yield srv


@pytest.fixture(scope="module")
def memory_store(store: Path) -> Iterator[str]:
    prefix = f"vhdx-remote-{uuid.uuid4().hex[:8]}"
    memory_put({f"{prefix}/{p.relative_to(store)}": p for p in store.rglob("*") if p.is_file()})
    yield prefix
    memory_remove(prefix)


@pytest.fixture(params=SCHEMES)
def url(request: pytest.FixtureRequest, store: Path) -> Callable[[str], str]:
    """``url("vm/child.avhdx")`` on the scheme of the test."""
    scheme = request.param
    if scheme == "memory":
        prefix = request.getfixturevalue("memory_store")
        return lambda key: f"memory:///{prefix}/{key}"
    if scheme == "file":
        return lambda key: file_url(store / key)
    srv = request.getfixturevalue("server")
    return lambda key: f"{srv.base_url}/{key}"


def _local_digest(path: Path) -> str:
    with vhdx.open(path) as disk:
        return sha256_of_disk(disk)


def test_content_and_info_equal_the_local_read(url: Callable[[str], str], store: Path) -> None:
    with vhdx.open(url("plain.vhdx")) as remote, vhdx.open(store / "plain.vhdx") as local:
        assert remote.name == url("plain.vhdx")
        assert sha256_of_disk(remote) == sha256_of_disk(local)
        r, lo = remote.info(), local.info()
        for key in ("virtual_size", "block_size", "disk_id", "allocated_blocks", "data_write_guid", "file_size"):
            assert getattr(r, key) == getattr(lo, key), key
        # Random small reads agree too (these go through the block cache).
        rng = random.Random(1)
        for _ in range(200):
            offset = rng.randrange(0, local.size)
            length = rng.randrange(1, 20000)
            assert remote.pread(offset, length) == local.pread(offset, length)
        stats = remote.remote_stats()
    assert stats is not None and stats["bytes_fetched"] > 0 and stats["requests"] > 0
    assert stats["cache_hits"] > 0  # the 200 small reads were not all fetched anew


def test_chain_parent_found_next_to_the_child_on_the_same_store(url: Callable[[str], str], store: Path) -> None:
    child_url = url("vm/child.avhdx")
    with vhdx.open(child_url) as disk:
        assert disk.parent is not None
        # Found on the store through the locator's relative path, not through the local absolute path.
        assert disk.parent.name == url("base/parent.vhdx")
        assert sha256_of_disk(disk) == _local_digest(store / "vm" / "child.avhdx")
        stats = disk.remote_stats()
        assert stats is not None and stats["remote_files"] == 2


def test_parent_found_by_file_name_next_to_the_child(store: Path) -> None:
    """The locator's relative path (..\\base\\parent.vhdx) leads nowhere; the parent's file name in
    the child's folder is tried next."""
    prefix = f"vhdx-flat-{uuid.uuid4().hex[:8]}"
    urls = memory_put({f"{prefix}/flat/child.avhdx": store / "vm" / "child.avhdx",
                       f"{prefix}/flat/parent.vhdx": store / "base" / "parent.vhdx"})
    try:
        with vhdx.open(urls[f"{prefix}/flat/child.avhdx"]) as disk:
            assert disk.parent is not None and disk.parent.name == urls[f"{prefix}/flat/parent.vhdx"]
            assert sha256_of_disk(disk) == _local_digest(store / "vm" / "child.avhdx")
    finally:
        memory_remove(prefix)


def test_missing_parent_on_the_store(store: Path) -> None:
    prefix = f"vhdx-orphan-{uuid.uuid4().hex[:8]}"
    urls = memory_put({f"{prefix}/vm/child.avhdx": store / "vm" / "child.avhdx"})
    child = urls[f"{prefix}/vm/child.avhdx"]
    try:
        with pytest.raises(vhdx.ParentNotFoundError) as err:
            vhdx.open(child)
        tried = f"memory:///{prefix}/base/parent.vhdx"
        assert tried in str(err.value)
        assert str(store) not in str(err.value).split("tried:")[1]  # the local path is not tried for a URL
        with vhdx.open(child, require_parent=False) as disk:
            assert disk.parent is None and disk.info().parent_missing
        # An explicit parent (here a URL on another store) is used as given.
        with vhdx.open(child, parent=file_url(store / "base" / "parent.vhdx")) as disk:
            assert sha256_of_disk(disk) == _local_digest(store / "vm" / "child.avhdx")
    finally:
        memory_remove(prefix)


def _bat_bytes(virtual_size: int, block_size: int, logical_sector_size: int = 512) -> int:
    """Bytes of BAT a dynamic disk needs (MS-VHDX 2.5: one entry per payload block, plus one
    sector bitmap entry per chunk of ChunkRatio blocks), computed here from the spec's formula."""
    chunk_ratio = (1 << 23) * logical_sector_size // block_size
    payload_blocks = -(-virtual_size // block_size)
    return (payload_blocks + -(-payload_blocks // chunk_ratio)) * 8


@pytest.mark.parametrize("name,block_size", [("big/empty-256m.vhdx", 256 * MiB), ("big/empty-32m.vhdx", 32 * MiB)])
def test_info_of_a_64_tib_image_fetches_little(name: str, block_size: int, url: Callable[[str], str],
                                               store: Path, request: pytest.FixtureRequest) -> None:
    """Documented bound: the header section and the metadata (one 1 MiB cache block each) plus the
    BAT, which info reads whole to count allocated blocks. Nothing of the 64 TiB payload is read."""
    server: RangeServer | None = request.getfixturevalue("server") if url(name).startswith("http") else None
    sent_before = server.log.bytes_sent if server else 0
    with vhdx.open(url(name)) as disk:
        info = disk.info()
        stats = disk.remote_stats()
    assert info.virtual_size == BIG_SIZE and info.allocated_blocks == 0
    assert stats is not None
    bound = 2 * REMOTE_CACHE_BLOCK_SIZE + _bat_bytes(BIG_SIZE, block_size)
    print(f"\n{url(name)}: info of a 64 TiB image fetched {stats['bytes_fetched']} bytes "
          f"({stats['bytes_fetched'] / MiB:.2f} MiB, {stats['bytes_fetched'] / BIG_SIZE:.1e} of the virtual size) "
          f"in {stats['requests']} requests; bound {bound} bytes")
    assert stats["bytes_fetched"] <= bound
    assert stats["requests"] <= 5
    if block_size == 256 * MiB:
        assert stats["bytes_fetched"] < 4.5 * MiB
    if server is not None:  # the server's own count agrees with ours
        assert server.log.bytes_sent - sent_before == stats["bytes_fetched"]
    assert (store / name).stat().st_size > stats["bytes_fetched"]  # not even the whole file


def test_http_requests_are_byte_ranges(server: RangeServer) -> None:
    before = len(server.log.requests)
    with vhdx.open(f"{server.base_url}/plain.vhdx") as disk:
        disk.pread(5 * MiB, 4096)
        stats = disk.remote_stats()
    seen = server.log.requests[before:]
    gets = [r for r in seen if r[0] == "GET"]
    assert stats is not None and len(gets) == stats["requests"] - 1  # one more: the size (HEAD)
    assert gets and all(rng is not None and rng.startswith("bytes=") for _, _, rng in gets)


def test_block_cache_stays_within_its_bound(store: Path) -> None:
    options = vhdx.RemoteOptions(cache_block_size=64 * KiB, cache_blocks=4)
    bound = 4 * 64 * KiB
    with vhdx.open(file_url(store / "plain.vhdx"), remote=options) as remote, vhdx.open(store / "plain.vhdx") as local:
        rng = random.Random(2)
        for _ in range(300):
            offset = rng.randrange(0, local.size - 4096)
            assert remote.pread(offset, 4096) == local.pread(offset, 4096)
            stats = remote.remote_stats()
            assert stats is not None and stats["cached_bytes"] <= bound
        # The same small read again is served from the cache: nothing more is fetched.
        remote.pread(offset, 4096)
        fetched = remote.remote_stats()["bytes_fetched"]  # type: ignore[index]
        remote.pread(offset, 4096)
        assert remote.remote_stats()["bytes_fetched"] == fetched  # type: ignore[index]


def test_remote_source_reads_any_range_exactly(store: Path) -> None:
    """RemoteSource against the file's bytes: reads across cache blocks, large reads, the end."""
    data = (store / "plain.vhdx").read_bytes()
    options = vhdx.RemoteOptions(cache_block_size=4096, cache_blocks=3)
    source = RemoteSource.open(file_url(store / "plain.vhdx"), options=options)
    rng = random.Random(3)
    cases = [(0, 1), (4095, 2), (4090, 4096 + 20), (len(data) - 10, 100), (len(data), 5), (len(data) + 9, 5),
             (8192, 3 * 4096 + 1)]
    cases += [(rng.randrange(0, len(data)), rng.randrange(0, 3 * 4096)) for _ in range(300)]
    for offset, length in cases:
        buf = bytearray(length)
        got = source.readinto(offset, memoryview(buf))
        expected = data[offset : offset + length]
        assert got == len(expected) and bytes(buf[:got]) == expected, (offset, length)
        assert source.cached_bytes <= 3 * 4096
    source.close()


def test_writable_open_is_refused(memory_store: str, store: Path) -> None:
    url = f"memory:///{memory_store}/plain.vhdx"
    fs = fsspec.filesystem("memory")
    before = hashlib.sha256(fs.cat_file(f"/{memory_store}/plain.vhdx")).hexdigest()
    with pytest.raises(vhdx.ReadOnlyError, match="read-only"):
        vhdx.open(url, "r+b")
    with pytest.raises(vhdx.ReadOnlyError, match="read-only"):
        check(url, repair=True)
    from vhdx.ops import compact

    with pytest.raises(vhdx.ReadOnlyError):
        compact(url)
    with vhdx.open(url) as disk, pytest.raises(vhdx.ReadOnlyError):
        disk.write(b"x")
    assert hashlib.sha256(fs.cat_file(f"/{memory_store}/plain.vhdx")).hexdigest() == before


def test_check_reads_a_chain_by_url(url: Callable[[str], str]) -> None:
    report = check(url("vm/child.avhdx"))
    assert report.exit_status == 0, report.findings
    assert report.parent is not None and report.parent.filename == url("base/parent.vhdx")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_missing_url_is_file_not_found(scheme: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if scheme == "memory":
        missing = f"memory:///nothing-{uuid.uuid4().hex}/x.vhdx"
    elif scheme == "file":
        missing = file_url(tmp_path / "x.vhdx")
    else:
        missing = f"{request.getfixturevalue('server').base_url}/nothing/x.vhdx"
    with pytest.raises(FileNotFoundError) as err:
        vhdx.open(missing)
    assert err.value.filename == missing


def test_unreachable_server_is_an_os_error_naming_the_url(tmp_path: Path) -> None:
    with http_server(tmp_path) as srv:
        dead = f"{srv.base_url}/x.vhdx"
    with pytest.raises(OSError) as err:  # the server is gone: connection refused
        vhdx.open(dead)
    assert not isinstance(err.value, FileNotFoundError)
    assert err.value.filename == dead


def test_server_without_byte_ranges_is_reported(store: Path, tmp_path: Path) -> None:
    shutil.copyfile(store / "plain.vhdx", tmp_path / "plain.vhdx")
    with http_server(tmp_path, honour_ranges=False) as srv, pytest.raises(OSError, match="Range"):
        vhdx.open(f"{srv.base_url}/plain.vhdx")


@pytest.mark.parametrize("base,relative,expected", [
    ("s3://bucket/vm/child.avhdx", "../base/p.vhdx", "s3://bucket/base/p.vhdx"),
    ("s3://bucket/vm/child.avhdx", "./p.vhdx", "s3://bucket/vm/p.vhdx"),
    ("s3://bucket/child.avhdx", "../../p.vhdx", "s3://bucket/p.vhdx"),  # never above the bucket
    ("http://h:8080/a/b/c.avhdx?sig=1", "p.vhdx", "http://h:8080/a/b/p.vhdx"),
    ("memory:///x/c.avhdx", "../p.vhdx", "memory:///p.vhdx"),
    ("memory://c.avhdx", "p.vhdx", "memory:///p.vhdx"),
    ("file:///srv/vm/c.avhdx", "../base/p.vhdx", "file:///srv/base/p.vhdx"),
    ("simplecache::s3://b/vm/c.avhdx", "p.vhdx", "simplecache::s3://b/vm/p.vhdx"),
])
def test_url_sibling(base: str, relative: str, expected: str) -> None:
    assert url_sibling(base, relative) == expected


@pytest.mark.parametrize("name,expected", [
    ("s3://b/k", True), ("https://h/x", True), ("memory:///x", True), ("simplecache::s3://b/k", True),
    ("/tmp/x.vhdx", False), ("x.vhdx", False), ("C:\\vm\\x.vhdx", False), ("C://x", False), (Path("/x"), False),
])
def test_is_url(name: object, expected: bool) -> None:
    assert is_url(name) is expected
