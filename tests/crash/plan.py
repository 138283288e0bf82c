"""A deterministic write plan, shared by the kill test's worker process and its checker."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    kind: str  # "write", "zeroes", "flush"
    offset: int = 0
    data: bytes = b""
    length: int = 0


def make_plan(seed: int, size: int, sector_size: int, steps: int) -> list[Step]:
    rng = random.Random(seed)
    plan = []
    for _ in range(steps):
        r = rng.random()
        if r < 0.75:
            length = rng.randrange(1, 256) * sector_size
            offset = rng.randrange(0, (size - length) // sector_size + 1) * sector_size
            plan.append(Step("write", offset, rng.randbytes(length), length))
        elif r < 0.82:
            length = rng.randrange(1, 4096) * sector_size
            offset = rng.randrange(0, (size - length) // sector_size + 1) * sector_size
            plan.append(Step("zeroes", offset, b"", length))
        else:
            plan.append(Step("flush"))
    return plan
