"""``vhdx cat``: the bytes written to stdout. Oracles: raw_sha256 and the per-MiB chunk digests of
expected.json (agreed by independent readers); slices are also compared with the library's read
path, which ``cat`` must reproduce exactly at any alignment."""

from __future__ import annotations

import hashlib

import pytest

import vhdx
from cli_support import ZERO_MIB_SHA256, chunk_digests, entry
from helpers import image_of

# Small images: Windows-made fixed and dynamic, QEMU-made dynamic and fixed, and an odd size
# whose last block is 512 bytes long.
WHOLE_IDS = [
    "velociraptor/test",
    "dissect.hypervisor/fixed.vhdx",
    "dissect.hypervisor/dynamic.vhdx",
    "qemu/dyn-64M-bs1M",
    "qemu/fixed-64M-bs8M",
    "qemu/dyn-64M512-bs32M",
]
SLICE_ID = "qemu/dyn-64M-bs1M"


@pytest.mark.parametrize("entry_id", WHOLE_IDS)
def test_cat_whole_disk_matches_raw_sha256(invoke, entry_id: str) -> None:
    e = entry(entry_id)
    result = invoke("cat", image_of(e))
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout_bytes) == e.virtual_size
    assert hashlib.sha256(result.stdout_bytes).hexdigest() == e.raw_sha256
    assert result.stderr == ""


# (offset, length) as typed on the command line; None = option not given.
SLICES = [
    ("0", "512"),
    ("1044480", "8192"),  # 1 MiB - 4 KiB: across a block boundary
    ("31.5M", "4M"),  # several blocks
    ("10M", "1"),
    ("777", "3333"),  # unaligned both ends
    ("64M", None),  # at the end: nothing
    ("67108800", None),  # the last 64 bytes, to the end
    ("67108800", "1G"),  # a length past the end is clipped
    ("60M", None),
    (None, "2K"),
]


@pytest.mark.parametrize(("offset", "length"), SLICES)
def test_cat_slice_equals_library_read(invoke, offset: str | None, length: str | None) -> None:
    path = image_of(entry(SLICE_ID))
    args = ["cat", path]
    if offset is not None:
        args += ["--offset", offset]
    if length is not None:
        args += ["--length", length]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    start = _bytes(offset) if offset is not None else 0
    with vhdx.open(path) as disk:
        count = disk.size - start if length is None else min(_bytes(length), disk.size - start)
        expected = disk.pread(start, count)
    assert result.stdout_bytes == expected
    assert len(result.stdout_bytes) == count


def _bytes(text: str) -> int:
    """Independent reading of the sizes used above (binary units, as the help says)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def test_cat_differencing_chain_slice_matches_chunk_digests(invoke, chain_layout) -> None:
    """A few MiB of the Windows-made child over its parent, checked against the ground truth."""
    chunk, digests = chunk_digests(chain_layout.child_entry)
    first, count = 1, 4  # MiB 1..4: the child's own sectors and the parent's, interleaved
    result = invoke("cat", chain_layout.child, "--offset", str(first * chunk), "--length", str(count * chunk))
    assert result.exit_code == 0, result.stderr
    out = result.stdout_bytes
    assert len(out) == count * chunk
    for i in range(count):
        got = hashlib.sha256(out[i * chunk : (i + 1) * chunk]).hexdigest()
        assert got == digests.get(first + i, ZERO_MIB_SHA256), first + i
    assert any(first + i in digests for i in range(count)), "the slice should hold data"


def test_cat_offset_past_end_is_an_error(invoke) -> None:
    e = entry(SLICE_ID)
    result = invoke("cat", image_of(e), "--offset", str(e.virtual_size + 1))
    assert result.exit_code == 1
    assert result.stdout_bytes == b""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhdx: ") and "past the end" in lines[0]


@pytest.mark.parametrize("bad", ["12Q", "-1", "1.5.5M", "0.3"])
def test_cat_rejects_bad_sizes_as_usage_errors(invoke, bad: str) -> None:
    result = invoke("cat", image_of(entry(SLICE_ID)), "--length", bad)
    assert result.exit_code == 2
    assert "--length" in result.stderr
    assert result.stdout_bytes == b""


def test_cat_missing_parent_fails_cleanly(invoke, lonely_child) -> None:
    result = invoke("cat", lonely_child, "--length", "1M")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vhdx: ") and "parent" in lines[0]
