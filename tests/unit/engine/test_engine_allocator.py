"""FreeSpace (engine/allocator.py): where new payload and sector bitmap blocks go.

Oracle: the placement rules of VHDX-FORMAT.md 1.2 and 12 step 3.1 -- every object starts on a
1 MiB boundary, past every existing structure and past the end of the file, and no two
allocations overlap -- checked on an in-memory source.
"""

from __future__ import annotations

import pytest

from vhdx.engine.allocator import FreeSpace

MiB = 1 << 20


class SizedSource:
    """Just enough of RandomAccess for the allocator: a size that truncate() changes."""

    def __init__(self, size: int) -> None:
        self._size = size
        self.truncations: list[int] = []

    def size(self) -> int:
        return self._size

    def truncate(self, size: int) -> None:
        self.truncations.append(size)
        self._size = size


@pytest.mark.parametrize(
    ("file_size", "used_end", "first"),
    [
        (4 * MiB, 4 * MiB, 4 * MiB),  # a new dynamic file: right after the BAT
        (4 * MiB + 1, 4 * MiB, 5 * MiB),  # a ragged end of file is rounded up
        (4 * MiB, 9 * MiB, 9 * MiB),  # a block recorded past EOF (truncated file) is not overwritten
        (10 * MiB - 4096, 3 * MiB, 10 * MiB),
        (0, 0, 0),
    ],
)
def test_first_allocation_is_aligned_and_past_everything(file_size: int, used_end: int, first: int) -> None:
    source = SizedSource(file_size)
    space = FreeSpace(source, used_end)  # type: ignore[arg-type]
    offset = space.allocate(MiB)
    assert offset == first
    assert offset % MiB == 0 and offset >= max(file_size, used_end)
    assert source.size() == offset + MiB  # extended at once, so the block reads as zeros


@pytest.mark.parametrize("lengths", [[MiB] * 5, [32 * MiB, MiB, 2 * MiB, 256 * MiB], [MiB + 1, 4096, 3 * MiB - 1]])
def test_allocations_are_consecutive_aligned_and_disjoint(lengths: list[int]) -> None:
    source = SizedSource(4 * MiB)
    space = FreeSpace(source, 4 * MiB)  # type: ignore[arg-type]
    spans = []
    for length in lengths:
        offset = space.allocate(length)
        spans.append((offset, offset + length))
        assert offset % MiB == 0
    for (a_start, a_end), (b_start, _) in zip(spans, spans[1:]):
        assert a_end <= b_start
        assert b_start - a_end < MiB  # no gap beyond the alignment padding
    assert source.size() >= spans[-1][1]
    assert source.size() % MiB == 0


def test_space_is_never_handed_out_twice_even_if_the_file_shrinks() -> None:
    """The allocator keeps its own end: it never goes back below what it gave out."""
    source = SizedSource(4 * MiB)
    space = FreeSpace(source, 4 * MiB)  # type: ignore[arg-type]
    a = space.allocate(MiB)
    source._size = 4 * MiB  # as if the extension were lost (a file object that cannot grow)
    b = space.allocate(MiB)
    assert b >= a + MiB
