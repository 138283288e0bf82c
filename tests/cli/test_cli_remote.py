"""The read-only commands on images given by URL (memory:// in-process, http:// from a loopback
server with Range support, file://): the same answers as for the local files, ``info --json``
reporting what was fetched, and one-line errors for what cannot work (missing URL, writes).

Ground truth: the same command run on the local file (and vhdx.open + hashlib for content).
"""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import Result

import vhdx
from helpers import require_module, sha256_of_disk
from partition_support import make_partitioned
from remote_support import RangeServer, file_url, http_server, memory_put, memory_remove

require_module("fsspec")

MiB, TiB = 1 << 20, 1 << 40


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-store")
    rng = random.Random(11)
    (root / "base").mkdir()
    (root / "vm").mkdir()
    with vhdx.create(root / "base" / "parent.vhdx", 16 * MiB, block_size=1 * MiB) as disk:
        for _ in range(10):
            disk.pwrite(rng.randrange(0, disk.size - 8192) // 512 * 512, rng.randbytes(8192))
    with vhdx.create(root / "vm" / "child.avhdx", 16 * MiB, parent=root / "base" / "parent.vhdx") as disk:
        for _ in range(10):
            disk.pwrite(rng.randrange(0, disk.size - 4096) // 512 * 512, rng.randbytes(4096))
    vhdx.create(root / "big.vhdx", 64 * TiB, block_size=256 * MiB).close()
    return root


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RangeServer]:
    with http_server(store) as srv:
        yield srv


@pytest.fixture(scope="module")
def mem(store: Path) -> Iterator[Callable[[str], str]]:
    prefix = f"cli-remote-{uuid.uuid4().hex[:8]}"
    memory_put({f"{prefix}/{p.relative_to(store)}": p for p in store.rglob("*") if p.is_file()})
    yield lambda key: f"memory:///{prefix}/{key}"
    memory_remove(prefix)


@pytest.fixture(params=["memory", "http", "file"])
def url(request: pytest.FixtureRequest, store: Path) -> Callable[[str], str]:
    if request.param == "memory":
        return request.getfixturevalue("mem")
    if request.param == "file":
        return lambda key: file_url(store / key)
    srv = request.getfixturevalue("server")
    return lambda key: f"{srv.base_url}/{key}"


def _ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhdx: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_info_json_of_a_url_matches_the_local_file_and_reports_fetched_bytes(invoke, url, store: Path) -> None:
    remote = json.loads(_ok(invoke("info", "--json", url("vm/child.avhdx"))).stdout)
    local = json.loads(_ok(invoke("info", "--json", store / "vm" / "child.avhdx")).stdout)
    assert remote["filename"] == url("vm/child.avhdx")
    assert remote["full-backing-filename"] == url("base/parent.vhdx")
    for key in ("virtual-size", "cluster-size", "format", "dirty-flag", "backing-filename"):
        assert remote[key] == local[key], key
    skip = {"filename", "actual-size", "parent-path"}
    r_data, l_data = remote["format-specific"]["data"], local["format-specific"]["data"]
    assert {k: v for k, v in r_data.items() if k not in skip} == {k: v for k, v in l_data.items() if k not in skip}
    assert "remote" not in local
    fetched = remote["remote"]
    assert fetched["remote-files"] == 2 and fetched["requests"] >= 2
    assert 0 < fetched["bytes-fetched"] <= sum(p.stat().st_size for p in (store / "vm" / "child.avhdx",
                                                                             store / "base" / "parent.vhdx"))


def test_info_text_of_a_url(invoke, url) -> None:
    out = _ok(invoke("info", url("vm/child.avhdx"))).stdout
    assert f"image: {url('vm/child.avhdx')}" in out
    assert "fetched:" in out and "requests" in out


def test_info_of_a_64_tib_image_over_http_fetches_little(invoke, server: RangeServer) -> None:
    before = server.log.bytes_sent
    doc = json.loads(_ok(invoke("info", "--json", f"{server.base_url}/big.vhdx")).stdout)
    fetched = doc["remote"]["bytes-fetched"]
    print(f"\nvhdx info --json of a 64 TiB image over HTTP: {fetched} bytes in {doc['remote']['requests']} requests")
    assert doc["virtual-size"] == 64 * TiB
    assert fetched < 4.5 * MiB  # header section + metadata (1 MiB cache blocks) + a 2.1 MiB BAT
    assert server.log.bytes_sent - before == fetched


def test_cat_hash_map_chain_check_of_a_url(invoke, url, store: Path) -> None:
    child = store / "vm" / "child.avhdx"
    with vhdx.open(child) as disk:
        expected = sha256_of_disk(disk)
    assert hashlib.sha256(_ok(invoke("cat", url("vm/child.avhdx"))).stdout_bytes).hexdigest() == expected
    assert _ok(invoke("hash", url("vm/child.avhdx"))).stdout.split() == ["SHA256", expected]
    remote_map = json.loads(_ok(invoke("map", "--json", url("vm/child.avhdx"))).stdout)
    local_map = json.loads(_ok(invoke("map", "--json", child)).stdout)
    assert [(e["start"], e["length"], e["depth"], e.get("data")) for e in remote_map] == \
        [(e["start"], e["length"], e["depth"], e.get("data")) for e in local_map]
    chain = _ok(invoke("chain", url("vm/child.avhdx"))).stdout
    assert url("base/parent.vhdx") in chain
    report = json.loads(_ok(invoke("check", "--json", url("vm/child.avhdx"))).stdout)
    assert report["corruptions"] == 0 and report["backing-image"]["filename"] == url("base/parent.vhdx")


def test_partitions_and_extract_from_a_url(invoke, tmp_path: Path, server: RangeServer, store: Path) -> None:
    _, image = make_partitioned(tmp_path, "gpt")
    target = store / f"gpt-{uuid.uuid4().hex[:6]}.vhdx"
    target.write_bytes(image.read_bytes())
    try:
        link = f"{server.base_url}/{target.name}"
        remote = json.loads(_ok(invoke("partitions", "--json", link)).stdout)
        local = json.loads(_ok(invoke("partitions", "--json", image)).stdout)
        assert remote["partitions"] == local["partitions"]
        _ok(invoke("extract", "-q", link, tmp_path / "p3-remote.raw", "-p", "3"))
        _ok(invoke("extract", "-q", image, tmp_path / "p3-local.raw", "-p", "3"))
        assert (tmp_path / "p3-remote.raw").read_bytes() == (tmp_path / "p3-local.raw").read_bytes()
    finally:
        target.unlink()


def test_convert_from_a_url(invoke, url, tmp_path: Path, store: Path) -> None:
    out = tmp_path / "flat.vhdx"
    _ok(invoke("convert", "-q", url("vm/child.avhdx"), out))
    with vhdx.open(out) as flat, vhdx.open(store / "vm" / "child.avhdx") as local:
        assert flat.disk_type == "dynamic" and sha256_of_disk(flat) == sha256_of_disk(local)


def test_missing_url_is_one_line(invoke, server: RangeServer, tmp_path: Path) -> None:
    for missing in (f"memory:///nothing-{uuid.uuid4().hex}/x.vhdx", f"{server.base_url}/nothing.vhdx",
                    file_url(tmp_path / "nothing.vhdx")):
        line = _one_line_error(invoke("info", missing))
        assert line == f"vhdx: {missing}: No such file or directory"


def test_what_cannot_be_done_by_url_is_refused_in_one_line(invoke, mem, tmp_path: Path) -> None:
    assert "read-only" in _one_line_error(invoke("check", "--repair", mem("vm/child.avhdx")))
    assert "only VHDX images" in _one_line_error(invoke("convert", "-f", "raw", mem("vm/child.avhdx"),
                                                         tmp_path / "x.raw"))
    assert "must be a local file" in _one_line_error(invoke("convert", tmp_path / "nope.vhdx", mem("out.vhdx")))
