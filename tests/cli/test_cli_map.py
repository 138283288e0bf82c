"""``vhdx map``: the allocation map.

Oracles: the per-MiB chunk digests of expected.json (a range we call zero must hold zeros in the
ground truth; the file bytes at a data range's ``offset`` must hash to the ground truth), and, for
QEMU-made images, qemu-img run now: ``qemu-img convert`` gives the content independently, and
``qemu-img map`` is compared where its answer is comparable. Its VHDX driver has no block-status
support, so it reports the whole disk as one ``data: true`` extent at depth 0 (LANDSCAPE.md):
only "whatever we call data, qemu calls data", "whatever qemu calls zero, we call zero", the
covered range and the depth can be compared; ``present`` cannot (qemu says present everywhere).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

import vhdx
from cli_support import ZERO_MIB_SHA256, chunk_digests, entry
from helpers import image_of, require_tool, run

MAP_KEYS_DATA = {"start", "length", "depth", "present", "zero", "data", "offset"}
MAP_KEYS_OTHER = MAP_KEYS_DATA - {"offset"}

MAP_IDS = [
    "qemu/dyn-64M-bs1M",
    "qemu/fixed-64M-bs8M",  # written blocks appended after the preallocated area
    "qemu/dyn-64M-bs1M-log4M-nozero",  # NOT_PRESENT blocks (unallocated)
    "qemu/dyn-64M512-bs32M",  # a 512-byte last block
    "qemu/dyn-6G-bs1M-sparse",  # sector bitmap entries interleaved in the BAT
    "dissect.hypervisor/dynamic.vhdx",
    "velociraptor/test",
    "qemu-iotests/test-disk2vhd",
    "discutils/vhdx-log-replay",  # BAT only valid after the log is replayed
]
QEMU_IDS = ["qemu/dyn-64M-bs1M", "qemu/fixed-64M-bs8M", "qemu/dyn-64M-bs1M-log4M-nozero", "qemu/dyn-64M512-bs32M"]


def _map_json(invoke, *args: object) -> list[dict[str, Any]]:
    result = invoke("map", "--json", *args)
    assert result.exit_code == 0, result.stderr
    entries = json.loads(result.stdout)
    assert isinstance(entries, list)
    return entries


def _assert_well_formed(entries: Sequence[dict[str, Any]], start: int, end: int, depths: int) -> None:
    """Exact qemu field names, consistent flags, and extents that tile [start, end) in order."""
    pos = start
    for e in entries:
        assert set(e) == (MAP_KEYS_DATA if e["data"] else MAP_KEYS_OTHER), e
        assert e["start"] == pos and e["length"] > 0, e
        assert 0 <= e["depth"] < depths
        assert (e["present"], e["zero"], e["data"]) in {(True, False, True), (True, True, False), (False, True, False)}
        pos += e["length"]
    assert pos == end


def _assert_claims_hold(entries: Sequence[dict[str, Any]], files: Sequence[Path], chunk: int,
                        digests: dict[int, str], disk: vhdx.VirtualDisk) -> None:
    """Every whole MiB is checked against the ground-truth digests; the unaligned edges of a run
    (sector-granular runs of a differencing disk) against the library's read path."""
    handles = [open(f, "rb") for f in files]  # noqa: SIM115 - closed below
    try:
        for e in entries:
            pos, end = e["start"], e["start"] + e["length"]
            while pos < end:
                piece_end = min(end, (pos // chunk + 1) * chunk)
                n = piece_end - pos
                if e["data"]:
                    f = handles[e["depth"]]
                    f.seek(e["offset"] + (pos - e["start"]))
                    stored = f.read(n)
                    assert len(stored) == n
                if n == chunk:
                    truth = digests.get(pos // chunk, ZERO_MIB_SHA256)
                    if e["data"]:
                        assert hashlib.sha256(stored).hexdigest() == truth, (e, pos)
                    else:
                        assert truth == ZERO_MIB_SHA256, ("called zero but holds data", e, pos)
                else:
                    actual = disk.pread(pos, n)
                    assert (stored if e["data"] else bytes(n)) == actual, (e, pos)
                pos = piece_end
    finally:
        for h in handles:
            h.close()


@pytest.mark.parametrize("entry_id", MAP_IDS)
def test_map_json_tiles_the_disk_and_matches_ground_truth(invoke, entry_id: str) -> None:
    e = entry(entry_id)
    path = image_of(e)
    entries = _map_json(invoke, path)
    _assert_well_formed(entries, 0, e.virtual_size, depths=1)
    chunk, digests = chunk_digests(e)
    with vhdx.open(path) as disk:
        _assert_claims_hold(entries, [path], chunk, digests, disk)
    # A map that calls everything data (or nothing) would pass the checks above vacuously.
    if digests:
        assert any(x["data"] for x in entries)


def test_map_differencing_chain(invoke, chain_layout) -> None:
    entries = _map_json(invoke, chain_layout.child)
    _assert_well_formed(entries, 0, chain_layout.child_entry.virtual_size, depths=2)
    assert {x["depth"] for x in entries if x["data"]} == {0, 1}, "both layers supply data"
    chunk, digests = chunk_digests(chain_layout.child_entry)
    with vhdx.open(chain_layout.child) as disk:
        _assert_claims_hold(entries, [chain_layout.child, chain_layout.parent], chunk, digests, disk)


def test_map_range(invoke) -> None:
    e = entry("qemu/dyn-64M-bs1M")
    entries = _map_json(invoke, image_of(e), "--offset", "31M", "--length", "5M")
    _assert_well_formed(entries, 31 << 20, 36 << 20, depths=1)
    clipped = _map_json(invoke, image_of(e), "--offset", "63M", "--length", "1G")
    _assert_well_formed(clipped, 63 << 20, e.virtual_size, depths=1)
    assert _map_json(invoke, image_of(e), "--offset", str(e.virtual_size)) == []
    past = invoke("map", image_of(e), "--offset", str(e.virtual_size + 512))
    assert past.exit_code == 1 and past.stderr.startswith("vhdx: ") and "past the end" in past.stderr


@pytest.mark.parametrize("entry_id", ["qemu/dyn-64M-bs1M", "qemu/fixed-64M-bs8M"])
def test_map_text_lists_the_data_runs(invoke, entry_id: str) -> None:
    path = image_of(entry(entry_id))
    data = [x for x in _map_json(invoke, path) if x["data"]]
    result = invoke("map", path)
    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["Offset", "Length", "Mapped", "to", "File"]
    parsed = []
    for row in rows:
        m = re.fullmatch(r"(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)\s+(.+)", row)
        assert m, row
        parsed.append((int(m[1], 16), int(m[2], 16), int(m[3], 16), m[4]))
    assert parsed == [(x["start"], x["length"], x["offset"], str(path)) for x in data]


@pytest.mark.interop
@pytest.mark.parametrize("entry_id", QEMU_IDS)
def test_map_agrees_with_qemu(invoke, entry_id: str, tmp_path: Path) -> None:
    require_tool("qemu-img")
    e = entry(entry_id)
    path = image_of(e)
    ours = _map_json(invoke, path)
    theirs = json.loads(run("qemu-img", "map", "-U", "--output=json", "-f", "vhdx", str(path)).stdout)
    _assert_well_formed(ours, 0, e.virtual_size, depths=1)
    assert sum(t["length"] for t in theirs) == e.virtual_size and theirs[0]["start"] == 0
    # Walk both maps together over every boundary either of them has.
    cuts = sorted({x["start"] for x in ours} | {t["start"] for t in theirs} | {e.virtual_size})
    for lo in cuts[:-1]:
        mine = next(x for x in ours if x["start"] <= lo < x["start"] + x["length"])
        qemu = next(t for t in theirs if t["start"] <= lo < t["start"] + t["length"])
        assert mine["depth"] == qemu["depth"]
        if mine["data"]:
            assert qemu["data"], (lo, mine, qemu)
        if qemu["zero"] and not qemu["data"]:
            assert mine["zero"], (lo, mine, qemu)
    # The content as qemu reads it: data runs hold what the file holds at offset, the rest is zero.
    raw_path = tmp_path / "disk.raw"
    run("qemu-img", "convert", "-U", "-f", "vhdx", "-O", "raw", str(path), str(raw_path))
    raw = raw_path.read_bytes()
    image = path.read_bytes()
    assert len(raw) == e.virtual_size
    for x in ours:
        window = raw[x["start"] : x["start"] + x["length"]]
        if x["data"]:
            assert image[x["offset"] : x["offset"] + x["length"]] == window, x
        else:
            assert window == bytes(x["length"]), x
