"""extents() walks a huge BAT a window at a time; the merged map must not depend on the window."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import vhdx
from vhdx.engine import engine as engine_module

MiB = 1 << 20


@pytest.mark.parametrize("window", [1, 3, 7])
def test_windowed_extents_equal_unwindowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int) -> None:
    rng = random.Random(window)
    base = tmp_path / "base.vhdx"
    with vhdx.create(base, 40 * MiB, block_size=MiB) as disk:
        for _ in range(12):
            disk.pwrite(rng.randrange(0, 39 * MiB), rng.randbytes(rng.randrange(1, 300_000)))
        disk.write_zeroes(20 * MiB, 3 * MiB)
    child = tmp_path / "child.vhdx"
    with vhdx.create(child, parent=base, block_size=MiB) as disk:
        for _ in range(12):
            disk.pwrite(rng.randrange(0, 39 * MiB), rng.randbytes(rng.randrange(1, 100_000)))
    with vhdx.open(child) as disk:
        whole = list(disk.extents())
        part = list(disk.extents(5 * MiB + 123, 17 * MiB))
    monkeypatch.setattr(engine_module, "EXTENT_WINDOW_BLOCKS", window)
    with vhdx.open(child) as disk:
        assert list(disk.extents()) == whole
        assert list(disk.extents(5 * MiB + 123, 17 * MiB)) == part
