"""Differencing chains made by an independent producer, read back through us and through libvhdi.

Producer: FATtools (``FATtools.vhdxutils``: ``mk_dynamic``, ``mk_diff`` and ``Image`` to write
through a child), GPL, used only here and imported inside the tests. Each layer gets small
writes that do not cover whole blocks (many not even whole sectors), so the children hold
PARTIALLY_PRESENT blocks with sector bitmaps, and children use other block sizes than their
parents, so reads must go to the parent by virtual offset. Oracles: a model of all the writes,
and pyvhdi (libvhdi) with ``set_parent`` on each layer from the bottom up.
dissect.hypervisor is deliberately not used: it drops sectors of partially present blocks
(VHDX-FORMAT.md section 14).

FATtools workarounds (each documented where it is applied):
  * ``mk_diff`` ignores its ``sector`` argument (it calls ``mk_dynamic`` without it), so every
    child it makes has 512-byte sectors even under a 4096-byte parent, which a correct reader
    must refuse (VHDX-FORMAT.md 7.7 step 4). We wrap ``mk_dynamic`` to pass the chain's size on.
  * Its parent lookup calls ``os.path.exists`` on the locator's ``relative_path`` as written
    (``.\\parent.vhdx``, Windows separators), relative to the current directory, and then asks
    for the ``volume_path`` key, which it never writes (``KeyError`` on POSIX). We build in the
    chain's folder and give each parent a symlink named literally ``.\\<name>``.
  * A write that covers only part of the disk's last sector makes FATtools read that sector
    through the parent, and its reader then seeks the grandparent past the end of the disk and
    raises. No partial-sector write touches the last sector here (whole last sectors are written).
  * Writing through a child whose blocks are larger than an ancestor's goes wrong: whether a new
    child block is FULLY or PARTIALLY_PRESENT is decided from the ancestors' block at the first
    written byte only (a FULLY_PRESENT block then hides ancestor data elsewhere in it), and a
    later write to a PARTIALLY_PRESENT block whose own ancestor block is empty raises
    UnboundLocalError. So block sizes never grow going up our chains (2 MiB under 32 MiB, the
    Hyper-V pattern, is covered; the reverse is not produced here).
  * Its ``mk_fixed`` writes malformed BATs (section 14), so the bottom layer is always dynamic.
"""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import require_module

import vhdx
from vhdx.constants import HEADER_1_OFFSET, HEADER_2_OFFSET, HEADER_SIZE
from vhdx.errors import ParentMismatchError
from vhdx.model.header import build_header, next_header, select_current

pytestmark = pytest.mark.interop

MiB = 1 << 20


@dataclass
class Chain:
    files: list[Path]  # the base first, the top last
    size: int
    sector: int
    content: np.ndarray  # uint8: what the top of the chain must read
    owner: np.ndarray  # int8: the layer that wrote each byte last (-1: never written)
    writes: list[list[tuple[int, int]]]  # per layer: (offset, length) of each write

    @property
    def top(self) -> Path:
        return self.files[-1]


@pytest.fixture
def fattools() -> Any:
    vu = require_module("FATtools.vhdxutils")
    return vu


def _plan_layer(
    rng: random.Random, size: int, sector: int, block: int, earlier: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Writes for one layer: none covers a whole block, many are not sector aligned."""
    ops: list[tuple[int, int]] = []
    for _ in range(6):  # whole sectors
        n = rng.randint(1, 8) * sector
        ops.append((rng.randrange(0, size - n + 1, sector), n))
    for _ in range(5):  # partial sectors: FATtools copies the rest of each sector from the parent
        n = rng.randint(1, 3 * sector)
        ops.append((rng.randrange(0, size - n + 1), n))
    for _ in range(2):  # across one of this layer's block boundaries
        boundary = rng.randrange(block, size, block)
        before, after = rng.randint(1, 3 * sector), rng.randint(1, 3 * sector)
        ops.append((boundary - before, min(before + after, size - boundary + before)))
    for off, n in rng.sample(earlier, min(5, len(earlier))):  # over lower layers' data
        start = max(0, off + rng.randint(-sector, n))
        ops.append((start, min(rng.randint(1, 2 * sector), size - start)))
    ops.append((0, rng.randint(1, sector)))  # the first bytes and the last sectors of the disk
    ops.append((size - (last := rng.randint(1, 4) * sector), last))
    ops.append((rng.randrange(0, size - block // 2, sector), block // 2))  # half a block, at once
    return [_clear_of_last_sector(op, size, sector) for op in ops]


def _clear_of_last_sector(op: tuple[int, int], size: int, sector: int) -> tuple[int, int]:
    """FATtools cannot write part of the disk's last sector (see the module docstring): cut such
    a write short of it, or make it cover the whole sector."""
    off, n = op
    last = size - sector
    if off + n <= last or (off % sector == 0 and (off + n) % sector == 0):
        return op
    if off < last:
        return off, last - off
    return last, sector


def build_chain(vu: Any, folder: Path, monkeypatch: pytest.MonkeyPatch, *, sector: int, blocks: list[int],
                size: int, seed: str) -> Chain:
    """``blocks[0]`` is the base's block size, then one differencing layer per further entry."""
    rng = random.Random(seed)
    data_rng = np.random.default_rng(rng.getrandbits(64))
    content = np.zeros(size, np.uint8)
    owner = np.full(size, -1, np.int8)
    files: list[Path] = []
    writes: list[list[tuple[int, int]]] = []
    folder.mkdir(parents=True, exist_ok=True)
    real_mk_dynamic = vu.mk_dynamic

    def mk_dynamic(*args: Any, **kwargs: Any) -> Any:
        # FATtools bug: mk_diff does not pass its sector size on (see the module docstring).
        kwargs.setdefault("sector", sector)
        return real_mk_dynamic(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(vu, "mk_dynamic", mk_dynamic)
        m.chdir(folder)  # FATtools resolves parents relative to the current directory
        for layer, block in enumerate(blocks):
            name = f"layer{layer}.vhdx"
            if layer == 0:
                vu.mk_dynamic(name, size, block=block, sector=sector)
            else:
                parent = files[-1].name
                # FATtools bug: see the module docstring; the name is the relative_path it records.
                link = folder / (".\\" + parent)
                if not link.exists():
                    link.symlink_to(parent)
                vu.mk_diff(name, parent, block=block)
            earlier = [w for layer_writes in writes for w in layer_writes]
            ops = _plan_layer(rng, size, sector, block, earlier)
            image = vu.Image(name, "rb+")
            try:
                for off, n in ops:
                    blob = data_rng.integers(1, 256, n, dtype=np.uint8)  # never 0: every written byte shows
                    image.seek(off)
                    image.write(blob.tobytes())
                    content[off : off + n] = blob
                    owner[off : off + n] = layer
            finally:
                image.close()
            files.append(folder / name)
            writes.append(ops)
    return Chain(files, size, sector, content, owner, writes)


def read_all(reader: Callable[[int, int], bytes], size: int, step: int = 8 * MiB) -> np.ndarray:
    out = bytearray()
    for off in range(0, size, step):
        out += reader(off, min(step, size - off))
    return np.frombuffer(bytes(out), np.uint8)


def _first_difference(got: np.ndarray, want: np.ndarray) -> str:
    where = np.flatnonzero(got != want)
    if not where.size:
        return "equal"
    return f"{where.size} bytes differ, first at 0x{int(where[0]):x}"


def read_with_pyvhdi(chain: Chain) -> np.ndarray:
    pyvhdi = require_module("pyvhdi")
    handles = []
    try:
        for path in chain.files:
            f = pyvhdi.file()
            f.open(str(path))
            if handles:
                f.set_parent(handles[-1])  # bottom up: each layer gets the one below
            handles.append(f)
        top = handles[-1]
        assert top.get_media_size() == chain.size
        return read_all(lambda off, n: top.read_buffer_at_offset(n, off), chain.size)
    finally:
        for f in reversed(handles):
            f.close()


def check_extents(disk: vhdx.VirtualDisk, chain: Chain) -> None:
    """Data extents at depth d are in layer d's file at file_offset; nothing written is reported
    as zero or unallocated; a byte is answered by the layer that wrote it last or one above it."""
    n_layers = len(chain.files)
    extents = list(disk.extents())
    assert extents[0].virtual_offset == 0 and extents[-1].end == chain.size
    assert all(a.end == b.virtual_offset for a, b in zip(extents, extents[1:]))
    answer = np.full(chain.size, -1, np.int8)  # the layer each byte is answered from
    handles = [open(p, "rb") for p in reversed(chain.files)]  # index = depth
    try:
        for e in extents:
            assert 0 <= e.depth < n_layers, e
            lo, hi = e.virtual_offset, e.end
            if e.state == "data":
                assert e.file_offset is not None
                f = handles[e.depth]
                f.seek(e.file_offset)
                stored = np.frombuffer(f.read(e.length), np.uint8)
                assert stored.size == e.length and np.array_equal(stored, chain.content[lo:hi]), (
                    f"{e}: layer file disagrees with the model: {_first_difference(stored, chain.content[lo:hi])}")
                answer[lo:hi] = n_layers - 1 - e.depth
            else:
                assert not chain.content[lo:hi].any(), f"{e} hides written data"
    finally:
        for f in handles:
            f.close()
    written = chain.owner >= 0
    assert (answer[written] >= chain.owner[written]).all(), "a byte is answered from below the layer that wrote it"


def assert_partial_blocks_in_top(disk: vhdx.VirtualDisk) -> None:
    """The top layer holds blocks that are only partly its own (sector bitmaps in use); without
    them this test would not exercise what it is for."""
    bs = disk.block_size
    own = {e.virtual_offset // bs for e in disk.extents(include_parent=False) if e.state == "data"}
    mixed = [b for b in own if any(e.state != "data" for e in disk.extents(b * bs, bs, include_parent=False))]
    assert mixed, "no partially present block in the top layer"


# Block sizes never grow going up a chain: FATtools cannot write a child whose blocks are larger
# than an ancestor's (see the module docstring).
CHAINS = [
    pytest.param(512, [4 * MiB, 2 * MiB, 1 * MiB, 1 * MiB], id="512-base4M-2M-1M-1M"),
    pytest.param(4096, [4 * MiB, 2 * MiB, 1 * MiB, 1 * MiB], id="4096-base4M-2M-1M-1M"),
    pytest.param(512, [32 * MiB, 8 * MiB, 2 * MiB, 2 * MiB, 1 * MiB, 1 * MiB], id="512-depth5"),
    pytest.param(4096, [2 * MiB, 2 * MiB, 2 * MiB, 1 * MiB], id="4096-base2M-2M-2M-1M"),
]


@pytest.mark.parametrize(("sector", "blocks"), CHAINS)
def test_chain_reads_like_the_model_and_libvhdi(
    fattools: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sector: int, blocks: list[int]
) -> None:
    size = 40 * MiB + 3 * sector  # not a multiple of any block size: partial last blocks
    chain = build_chain(fattools, tmp_path / "chain", monkeypatch, sector=sector, blocks=blocks, size=size,
                        seed=f"{sector}/{blocks}")
    # From another working directory: the parents must be found relative to each child.
    monkeypatch.chdir(tmp_path)
    with vhdx.open(chain.top) as disk:
        assert disk.size == size and disk.logical_sector_size == sector
        assert [d.disk_type for d in disk.chain] == ["differencing"] * (len(blocks) - 1) + ["dynamic"]
        assert [os.path.realpath(d.name) for d in disk.chain] == [str(p.resolve()) for p in reversed(chain.files)]
        assert [d.block_size for d in disk.chain] == list(reversed(blocks))
        ours = read_all(disk.pread, size)
        assert np.array_equal(ours, chain.content), _first_difference(ours, chain.content)
        # Unaligned reads across sector and block boundaries, compared with the model.
        rng = random.Random(sector)
        for off, n in [w for layer in chain.writes for w in layer]:
            lo, hi = max(0, off - rng.randint(0, 700)), min(size, off + n + rng.randint(0, 700))
            disk.seek(lo)
            assert disk.read(hi - lo) == chain.content[lo:hi].tobytes(), f"[0x{lo:x}, 0x{hi:x})"
        check_extents(disk, chain)
        assert_partial_blocks_in_top(disk)
    theirs = read_with_pyvhdi(chain)
    assert np.array_equal(theirs, chain.content), "libvhdi disagrees with the model: " + _first_difference(
        theirs, chain.content)


def _rewrite_data_write_guid(path: Path) -> uuid.UUID:
    """Give ``path`` a new DataWriteGuid the way a writer would: a following header (sequence
    number + 1, valid checksum) written over the non-current one."""
    with open(path, "r+b") as f:
        f.seek(HEADER_1_OFFSET)
        raw1 = f.read(HEADER_SIZE)
        f.seek(HEADER_2_OFFSET)
        raw2 = f.read(HEADER_SIZE)
        choice = select_current(raw1, raw2)
        new_guid = uuid.uuid4()
        header = next_header(choice.current, data_write_guid=new_guid)
        f.seek((HEADER_1_OFFSET, HEADER_2_OFFSET)[1 - choice.current_index])
        f.write(build_header(header))
    return new_guid


def test_parent_modified_after_the_child_is_refused(
    fattools: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 24 * MiB + 512
    blocks = [4 * MiB, 2 * MiB, 1 * MiB, 1 * MiB]
    chain = build_chain(fattools, tmp_path / "chain", monkeypatch, sector=512, blocks=blocks, size=size, seed="linkage")
    middle = chain.files[1]
    with vhdx.open(chain.top) as disk:  # the intact chain opens
        assert len(disk.chain) == 4
    new_guid = _rewrite_data_write_guid(middle)
    with vhdx.open(middle) as disk:  # the rewritten header is valid and current
        assert disk.info().data_write_guid == str(new_guid)
    with pytest.raises(ParentMismatchError):
        vhdx.open(chain.top)
    with pytest.raises(ParentMismatchError):
        vhdx.open(chain.files[2])  # the direct child of the modified layer
    with vhdx.open(chain.top, ignore_id_mismatch=True) as disk:
        assert len(disk.chain) == 4
        ours = read_all(disk.pread, size)
        assert np.array_equal(ours, chain.content), _first_difference(ours, chain.content)
