"""Differencing chains for the merge and checkpoint tests, built through the public API.

Every layer gets a random mix of writes chosen to reach every kind of range a merge must carry:
whole blocks, unaligned small writes (partially present blocks, sector-exact), zeroed ranges
(ZERO blocks that hide the parent) and discards, with block sizes that differ between layers.
The oracle is always the content read through the chain before an operation (``content``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import vhdx

MiB = 1 << 20


def content(path: Path, **kw: object) -> bytes:
    """The whole virtual disk of ``path`` read through its chain."""
    with vhdx.open(path, **kw) as d:  # type: ignore[arg-type]
        return d.read()


def digest(path: Path, **kw: object) -> str:
    return hashlib.sha256(content(path, **kw)).hexdigest()


def data_write_guid(path: Path) -> str:
    with vhdx.open(path, require_parent=False, ignore_id_mismatch=True) as d:
        return d.info().data_write_guid


def locator(path: Path) -> dict[str, str]:
    with vhdx.open(path, require_parent=False, ignore_id_mismatch=True) as d:
        return dict(d.info().parent_locator or {})


def scribble(disk: vhdx.VirtualDisk, rng: random.Random, count: int) -> None:
    """``count`` random operations on ``disk``: writes large and small (unaligned), zeroing,
    discards; each layer thus ends with full, partial, zero and untouched blocks."""
    size = disk.size
    for _ in range(count):
        r = rng.random()
        if r < 0.45:  # small and unaligned: a few sectors of a block, edges completed from below
            length = rng.randrange(1, 3000)
            offset = rng.randrange(0, size - length)
            disk.pwrite(offset, rng.randbytes(length))
        elif r < 0.75:
            length = rng.randrange(1, 3 * MiB // 2)
            offset = rng.randrange(0, size - length)
            disk.pwrite(offset, rng.randbytes(length))
        elif r < 0.9:
            block = disk.block_size
            start = rng.randrange(0, size // block) * block
            length = min(size - start, block * rng.randrange(1, 3))
            if rng.random() < 0.5:  # not block-aligned: zeros written into the block
                start += disk.logical_sector_size * rng.randrange(1, 8)
                length = min(size - start, length)
            disk.write_zeroes(start, length)
        else:
            block = disk.block_size
            start = rng.randrange(0, size // block) * block
            disk.discard(start, min(block, size - start))


def make_chain(folder: Path, names: Sequence[str], *, size: int = 16 * MiB, sector: int = 512,
               block_sizes: Sequence[int] | None = None, base_type: str = "dynamic", seed: object = 0,
               ops: int = 25) -> list[Path]:
    """A chain ``names[0]`` (base) <- ``names[1]`` <- ... in ``folder``, each layer scribbled on.

    Returns:
        The paths, base first.
    """
    rng = random.Random(f"chain-{seed}")
    if block_sizes is None:
        block_sizes = [4 * MiB] + [(1 * MiB, 2 * MiB)[i % 2] for i in range(len(names) - 1)]
    paths = [folder / n for n in names]
    with vhdx.create(paths[0], size, block_size=block_sizes[0], logical_sector_size=sector,
                     disk_type=base_type) as d:
        scribble(d, rng, ops)
    for parent, path, block in zip(paths, paths[1:], block_sizes[1:]):
        with vhdx.create(path, parent=parent, block_size=block) as d:
            scribble(d, rng, ops)
    return paths
