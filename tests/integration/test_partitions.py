"""Partition tables inside virtual disks, against util-linux sfdisk on the same raw disk."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import pytest

import vhdx
from partition_support import make_partitioned, sfdisk_json, vhdx_bytes
from vhdx.model.partitions import read_partition_table
from vhdx.ops.partitions import extract_partition, find_partition, list_partitions

MiB = 1 << 20


@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_partitions_match_sfdisk(tmp_path: Path, scheme: str) -> None:
    raw, image = make_partitioned(tmp_path, scheme)
    want = sfdisk_json(raw)
    with vhdx.open(image) as d:
        table = list_partitions(d)
    assert table.scheme == ("gpt" if scheme == "gpt" else "mbr")
    assert table.problems == []
    got = {p.index: p for p in table.partitions}
    assert sorted(got) == sorted(int(p["node"].rsplit("raw", 1)[1]) for p in want["partitions"])
    for p in want["partitions"]:
        mine = got[int(p["node"].rsplit("raw", 1)[1])]
        assert mine.start == p["start"] * 512
        assert mine.length == p["size"] * 512
        if scheme == "gpt":
            assert mine.type == p["type"].lower()
            assert mine.guid == p["uuid"].lower()
            assert mine.name == p["name"]
            assert bool(mine.attributes >> 63) == ("GUID:63" in p.get("attrs", ""))
        else:
            assert int(mine.type, 16) == int(p["type"], 16)
            assert mine.bootable == bool(p.get("bootable"))
    if scheme == "gpt":
        assert table.disk_guid == want["id"].lower()
        assert table.protective_mbr
    else:
        assert table.mbr_signature == int(want["id"], 16)
        assert {p.kind for p in table.partitions} == {"primary", "extended", "logical"}


@pytest.mark.parametrize("scheme", ["mbr", "gpt"])
def test_extract_every_partition_is_the_raw_slice_and_sparse(tmp_path: Path, scheme: str) -> None:
    raw, image = make_partitioned(tmp_path, scheme)
    data = raw.read_bytes()
    with vhdx.open(image) as d:
        parts = [p for p in list_partitions(d).partitions if p.kind != "extended"]
        total_written = total_length = 0
        for p in parts:
            out = tmp_path / f"p{p.index}.img"
            result = extract_partition(d, p.index, out)
            assert out.read_bytes() == data[p.start : p.end]
            allocated = sum(e.length for e in d.extents(p.start, p.length) if e.state == "data")
            assert result.bytes_written == allocated  # only the allocated blocks were written
            assert os.stat(out).st_blocks * 512 <= allocated + 64 * 1024  # holes stayed holes
            total_written += allocated
            total_length += p.length
        assert total_written < total_length
        with pytest.raises(vhdx.VhdxError, match="no partition 42"):
            find_partition(d, 42)
        with pytest.raises(FileExistsError):
            extract_partition(d, parts[0].index, tmp_path / f"p{parts[0].index}.img")


def test_damaged_primary_gpt_falls_back_to_the_backup(tmp_path: Path) -> None:
    raw, _ = make_partitioned(tmp_path, "gpt")
    data = bytearray(raw.read_bytes())
    data[512 + 40] ^= 0xFF  # inside the primary header (its CRC no longer matches)
    table = read_partition_table(lambda o, n: bytes(data[o : o + n]), len(data), 512)
    assert table.scheme == "gpt"
    assert any("backup" in p for p in table.problems)
    assert len(table.partitions) == 4


def test_ebr_loop_and_hostile_gpt_counts_are_bounded(tmp_path: Path) -> None:
    raw, _ = make_partitioned(tmp_path, "mbr")
    data = bytearray(raw.read_bytes())
    # Point the last EBR's link back at the first EBR: a loop.
    first_ebr = 16384 * 512
    ebr = first_ebr
    while True:
        link = data[ebr + 446 + 16 : ebr + 446 + 32]
        if link[4] == 0:
            break
        ebr = first_ebr + struct.unpack_from("<I", link, 8)[0] * 512
    data[ebr + 446 + 16 : ebr + 446 + 32] = struct.pack("<B3sB3sII", 0, b"\0\0\0", 5, b"\0\0\0", 0, 2048)
    table = read_partition_table(lambda o, n: bytes(data[o : o + n]), len(data), 512)
    assert any("loops" in p for p in table.problems)

    gpt_raw, _ = make_partitioned(tmp_path, "gpt")
    g = bytearray(gpt_raw.read_bytes())
    struct.pack_into("<I", g, 512 + 80, 0xFFFFFFFF)  # entry count
    struct.pack_into("<I", g, 512 + 16, 0)
    struct.pack_into("<I", g, 512 + 16, zlib.crc32(bytes(g[512 : 512 + 92])))
    table = read_partition_table(lambda o, n: bytes(g[o : o + n]), len(g), 512)
    assert any("more than this tool reads" in p for p in table.problems)


def test_unpartitioned_disk(tmp_path: Path) -> None:
    path = tmp_path / "blank.vhdx"
    vhdx.create(path, 4 * MiB).close()
    with vhdx.open(path) as d:
        assert list_partitions(d).scheme == "none"
    assert vhdx_bytes(path) == bytes(4 * MiB)
