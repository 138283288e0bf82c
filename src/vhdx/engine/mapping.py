"""Extents: what each virtual byte range is made of. Pure helpers shared by the engine and the API.

References: MS-VHDX 2.5.1 (states and what a read returns); VHDX-FORMAT.md 8.3.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..constants import PayloadBlockState

DATA = "data"  # stored in the file at file_offset
ZERO = "zero"  # reads as zeros because the BAT says so (ZERO, UNMAPPED, UNDEFINED)
UNALLOCATED = "unallocated"  # no layer of the chain stores it; reads as zeros

# Per payload state: how a block's reads are answered. PARENT means "the next layer down" in a
# differencing disk and plain zeros (unallocated) otherwise.
CLASS_DATA, CLASS_ZERO, CLASS_PARENT, CLASS_PARTIAL = 0, 1, 2, 3
STATE_CLASS = np.full(8, CLASS_ZERO, dtype=np.uint8)
STATE_CLASS[PayloadBlockState.NOT_PRESENT] = CLASS_PARENT
STATE_CLASS[PayloadBlockState.FULLY_PRESENT] = CLASS_DATA
STATE_CLASS[PayloadBlockState.PARTIALLY_PRESENT] = CLASS_PARTIAL


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of virtual bytes answered the same way.

    Attributes:
        virtual_offset: first virtual byte.
        length: byte count.
        state: ``"data"``, ``"zero"`` or ``"unallocated"``.
        file_offset: where the data lies in the file of layer ``depth`` (``"data"`` only).
        depth: the layer of the chain that answers (0 = the image itself, 1 = its parent, ...).
    """

    virtual_offset: int
    length: int
    state: str
    file_offset: int | None
    depth: int

    @property
    def end(self) -> int:
        return self.virtual_offset + self.length


def merge(extents: Iterable[Extent]) -> Iterator[Extent]:
    """Join neighbours that are answered the same way (contiguous in the file for data)."""
    pending: Extent | None = None
    for e in extents:
        if e.length <= 0:
            continue
        if (
            pending is not None
            and pending.end == e.virtual_offset
            and pending.state == e.state
            and pending.depth == e.depth
            and (e.state != DATA or (pending.file_offset is not None and pending.file_offset + pending.length == e.file_offset))
        ):
            pending = Extent(pending.virtual_offset, pending.length + e.length, pending.state, pending.file_offset, pending.depth)
            continue
        if pending is not None:
            yield pending
        pending = e
    if pending is not None:
        yield pending
