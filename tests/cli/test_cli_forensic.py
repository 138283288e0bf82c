"""``vhdx hash``, ``vhdx partitions`` and ``vhdx extract``: the digests are those recorded in
expected.json (independent readers) or computed by hashlib over sfdisk-made raw disks; partition
JSON has the documented shape; the image is never written."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from cli_support import CHAIN_ID
from helpers import expected_params, file_digest, image_of
from partition_support import make_partitioned

SMALL = expected_params(lambda e: e.virtual_size <= (1 << 30) and e.id != CHAIN_ID)


@pytest.mark.parametrize("e", SMALL)
def test_hash_matches_expected_json(invoke, e) -> None:
    path = image_of(e)
    before = (file_digest(path), os.stat(path).st_mtime_ns)
    result = invoke("hash", str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"SHA256  {e.raw_sha256}\n"
    assert (file_digest(path), os.stat(path).st_mtime_ns) == before


def test_hash_of_a_chain(invoke, chain_layout) -> None:
    result = invoke("hash", "--json", str(chain_layout.child))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["digests"]["sha256"] == chain_layout.child_entry.raw_sha256


def test_several_algorithms_and_partitions_in_one_pass(invoke, tmp_path: Path) -> None:
    raw, image = make_partitioned(tmp_path, "gpt")
    data = raw.read_bytes()
    result = invoke("hash", "-a", "sha256,md5,SHA1,blake2b", "--partitions", "--json", str(image))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    for name in ("sha256", "md5", "sha1", "blake2b"):
        assert doc["digests"][name] == hashlib.new(name, data).hexdigest()
    parts = {p["index"]: p for p in doc["partitions"]}
    assert sorted(parts) == [1, 2, 3, 4]
    for p in parts.values():
        piece = data[p["start"] : p["start"] + p["length"]]
        assert p["digests"]["md5"] == hashlib.md5(piece).hexdigest()
    text = invoke("hash", "-a", "md5", "--partitions", str(image)).stdout.splitlines()
    assert text[0] == f"MD5  {hashlib.md5(data).hexdigest()}"
    assert text[1].endswith("  part1")


def test_hash_rejects_unknown_algorithm(invoke, tmp_path: Path) -> None:
    _, image = make_partitioned(tmp_path, "mbr")
    result = invoke("hash", "-a", "sha256,nope", str(image))
    assert result.exit_code == 1
    assert "unknown hash algorithm" in result.stderr and result.stderr.count("\n") == 1


def test_partitions_json_shape(invoke, tmp_path: Path) -> None:
    _, image = make_partitioned(tmp_path, "mbr")
    result = invoke("partitions", "--json", str(image))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["scheme"] == "mbr" and doc["problems"] == []
    assert [p["index"] for p in doc["partitions"]] == [1, 2, 3, 5, 6, 7]
    assert {"start", "length", "kind", "type", "type-name", "bootable"} <= set(doc["partitions"][0])
    text = invoke("partitions", str(image)).stdout
    assert "Linux (0x83) bootable" in text and "logical" in text


def test_extract_cli(invoke, tmp_path: Path) -> None:
    raw, image = make_partitioned(tmp_path, "mbr")
    data = raw.read_bytes()
    out = tmp_path / "p6.img"
    result = invoke("extract", str(image), str(out), "--partition", "6", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert out.read_bytes() == data[doc["start"] : doc["start"] + doc["length"]]
    again = invoke("extract", str(image), str(out), "--partition", "6")
    assert again.exit_code == 1 and "file exists" in again.stderr
    missing = invoke("extract", str(image), str(tmp_path / "x.img"), "--partition", "3")
    assert missing.exit_code == 1 and "extended" in missing.stderr


def test_recover_and_log_json_shapes(invoke, tmp_path: Path) -> None:
    import vhdx

    path = tmp_path / "r.vhdx"
    with vhdx.create(path, 8 << 20, block_size=1 << 20) as d:
        d.pwrite(2 << 20, b"secret" * 100)
        d.flush()
        d.discard(2 << 20, 1 << 20)
        d.pwrite(5 << 20, b"later")
    result = invoke("recover", "--json", str(path))
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    region = next(r for r in doc["regions"] if r["nonzero"])
    assert {"file_offset", "length", "nonzero", "nonzero_bytes", "kind"} <= set(region)
    assert region["nonzero_bytes"] == 600
    log = json.loads(invoke("log", "--json", str(path)).stdout)
    assert isinstance(log["entries"], list) and log["entries"]
    text = invoke("recover", str(path)).stdout
    assert "600 non-zero bytes" in text
