"""plan_moves (vhdx.ops.compact): the pure planning step of compaction.

Oracle: the rules the plan must obey, checked on random layouts (hypothesis) against the layout
itself: every target is 1 MiB-aligned free space of the layout *before* any move (never the space
of another object, old or new, nor a reserved range), below the object's old place; targets do
not overlap each other; the returned end is the end of the highest structure afterwards; and the
result is tight where it can be (with objects of one size, no hole big enough for one is left
below the new end). And the planner (arrays and sorts) gives exactly what the rule written the
plain way, one tuple per object (``reference_plan``), gives.
"""

from __future__ import annotations

import importlib

from hypothesis import given
from hypothesis import strategies as st

MiB = 1 << 20
plan_moves = importlib.import_module("vhdx.ops.compact").plan_moves


def test_table() -> None:
    reserved = [(0, MiB), (MiB, 2 * MiB), (2 * MiB, 4 * MiB)]
    # Blocks of 2 MiB at 4, 8 and 12 MiB: the one at 12 goes to the hole at 6, nothing else moves.
    objects = [(4 * MiB, 2 * MiB, 0, False), (8 * MiB, 2 * MiB, 1, False), (12 * MiB, 2 * MiB, 2, False)]
    moves, end = plan_moves(objects, reserved)
    assert [(m.index, m.source, m.target) for m in moves] == [(2, 12 * MiB, 6 * MiB)]
    assert end == 10 * MiB
    # Nothing to move: the end is the last object's.
    moves, end = plan_moves([(4 * MiB, 2 * MiB, 0, False)], reserved)
    assert moves == [] and end == 6 * MiB
    # No object at all: the end is the last reserved range's.
    assert plan_moves([], reserved) == ([], 4 * MiB)
    # A 1 MiB sector bitmap block fits a hole a payload block does not.
    objects = [(4 * MiB, 2 * MiB, 0, False), (7 * MiB, 2 * MiB, 1, False), (10 * MiB, MiB, 0, True)]
    moves, end = plan_moves(objects, reserved)
    assert [(m.bitmap, m.target) for m in moves] == [(True, 6 * MiB)]
    assert end == 9 * MiB


@st.composite
def layouts(draw: st.DrawFn) -> tuple[list[tuple[int, int, int, bool]], list[tuple[int, int]]]:
    """Reserved ranges and objects laid out without overlap, 1 MiB-aligned, with random gaps."""
    block = draw(st.sampled_from([1, 2, 4]))
    mixed = draw(st.booleans())
    pos = 1
    reserved = [(0, MiB)]
    objects: list[tuple[int, int, int, bool]] = []
    for i in range(draw(st.integers(0, 40))):
        pos += draw(st.integers(0, 3))
        kind = draw(st.integers(0, 9))
        if kind == 0:
            n = draw(st.integers(1, 3))
            reserved.append((pos * MiB, (pos + n) * MiB))
        elif kind == 1 and mixed:
            n = 1
            objects.append((pos * MiB, MiB, i, True))
        else:
            n = block
            objects.append((pos * MiB, block * MiB, i, False))
        pos += n
    return objects, reserved


@given(layouts())
def test_plan_rules(layout: tuple[list[tuple[int, int, int, bool]], list[tuple[int, int]]]) -> None:
    objects, reserved = layout
    moves, end = plan_moves(objects, reserved)
    occupied = sorted(reserved + [(o, o + n) for o, n, _, _ in objects])
    by_key = {(i, b): (o, n) for o, n, i, b in objects}
    targets = []
    for m in moves:
        assert (m.source, m.length) == by_key[(m.index, m.bitmap)]
        assert m.target % MiB == 0 and m.target < m.source
        # Free in the layout before any move.
        assert all(m.target + m.length <= s or m.target >= e for s, e in occupied), m
        targets.append((m.target, m.target + m.length))
    targets.sort()
    assert all(a[1] <= b[0] for a, b in zip(targets, targets[1:])), "targets overlap"
    moved = {(m.index, m.bitmap) for m in moves}
    final = [(o, o + n) for o, n, i, b in objects if (i, b) not in moved] + targets
    assert end == max([e for _, e in reserved] + [e for _, e in final])
    # Tight for one object size: no hole of that size left below the highest object.
    sizes = {n for _, n, _, _ in objects}
    if len(sizes) == 1:
        (size,) = sizes
        highest = max(s for s, _ in final)
        cursor = 0
        for s, e in sorted(reserved + final):
            if s > highest:
                break
            assert s - cursor < size, f"a {size >> 20} MiB hole at {cursor >> 20} MiB below an object"
            cursor = max(cursor, e)


# --- the array planner against a plain reference ------------------------------------------------
# plan_moves works on arrays (sorts, one Python step per object that moves). The reference below
# is the same rule written the obvious way, one tuple per object; on any layout (objects that
# overlap, share an offset or sit in reserved ranges included) both must give the same moves in
# the same order and the same end.


def _align_up(n: int) -> int:
    return -(-n // MiB) * MiB


def reference_plan(objects: list[tuple[int, int, int, bool]],
                   reserved: list[tuple[int, int]]) -> tuple[list[tuple[int, bool, int, int, int]], int]:
    spans = sorted([(s, e) for s, e in reserved if e > s] + [(o, o + n) for o, n, _, _ in objects])
    holes = []
    cursor = 0
    for s, e in spans:
        lo, hi = _align_up(cursor), s // MiB * MiB
        if hi > lo:
            holes.append([lo, hi])
        cursor = max(cursor, e)
    moves = []
    end = max((e for _, e in reserved), default=0)
    ordered = sorted(objects, key=lambda o: o[0], reverse=True)  # stable: ties keep their order
    for i, (offset, length, index, bitmap) in enumerate(ordered):
        # First hole, lowest first, that holds the object (holes only shrink: a hole too small
        # for a length stays too small).
        h = next((k for k, (lo, hi) in enumerate(holes) if hi - lo >= length), None)
        if h is None or holes[h][0] >= offset:
            end = max([end] + [o + n for o, n, _, _ in ordered[i:]])
            break
        moves.append((index, bitmap, offset, holes[h][0], length))
        end = max(end, holes[h][0] + length)
        holes[h][0] += length
        if holes[h][0] == holes[h][1]:
            del holes[h]  # full: it can hold nothing more (and the search stays short)
    return moves, end


@st.composite
def messy_layouts(draw: st.DrawFn) -> tuple[list[tuple[int, int, int, bool]], list[tuple[int, int]]]:
    """Objects anywhere (overlapping, at one offset, inside reserved ranges), unaligned reserved
    ranges, empty ones."""
    reserved = [(0, MiB)] + draw(st.lists(st.tuples(st.integers(0, 40 * MiB), st.integers(0, 8 * MiB))
                                          .map(lambda t: (t[0], t[0] + t[1])), max_size=4))
    sizes = draw(st.lists(st.sampled_from([1, 2, 4]), min_size=1, max_size=2))
    objects = draw(st.lists(st.tuples(st.integers(0, 60), st.sampled_from(sizes), st.booleans()), max_size=40))
    return [(pos * MiB, n * MiB, i, bitmap) for i, (pos, n, bitmap) in enumerate(objects)], reserved


@given(st.one_of(layouts(), messy_layouts()))
def test_plan_matches_reference(layout: tuple[list[tuple[int, int, int, bool]], list[tuple[int, int]]]) -> None:
    objects, reserved = layout
    moves, end = plan_moves(objects, reserved)
    expected_moves, expected_end = reference_plan(objects, reserved)
    assert [(m.index, m.bitmap, m.source, m.target, m.length) for m in moves] == expected_moves
    assert end == expected_end


def test_plan_walks_past_one_batch() -> None:
    """More objects move than the planner fetches to Python at once (4096): blocks at every odd
    MiB, holes at the even ones; the highest move down into the lowest holes until the two
    meet near the middle, in the second batch."""
    count = 10_000
    objects = [((1 + 2 * i) * MiB, MiB, i, i % 7 == 0) for i in range(count)]
    moves, end = plan_moves(objects, [(0, MiB)])
    expected_moves, expected_end = reference_plan(objects, [(0, MiB)])
    assert [(m.index, m.bitmap, m.source, m.target, m.length) for m in moves] == expected_moves
    assert end == expected_end and 4096 < len(moves) < count
