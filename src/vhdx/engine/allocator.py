"""FreeSpace: where new payload and sector bitmap blocks go.

Policy (VHDX-FORMAT.md 12 step 3.1): a new block is placed 1 MiB-aligned at the end of the file,
past every existing structure, and the file is extended over it at once, so its bytes read as
zero without being written. Space freed in a session (trimmed blocks) is not reused: reusing it
before the freeing BAT change is durable could expose stale data after a crash. Compaction
reclaims it.
"""

from __future__ import annotations

from .._units import align_up
from ..constants import OBJECT_ALIGNMENT
from .source import RandomAccess


class FreeSpace:
    """Allocates 1 MiB-aligned space at the end of the file."""

    def __init__(self, source: RandomAccess, used_end: int) -> None:
        self._source = source
        self.end = align_up(max(used_end, source.size()), OBJECT_ALIGNMENT)

    def allocate(self, length: int) -> int:
        """Reserve ``length`` bytes (rounded up to 1 MiB) and return their file offset. The file
        is extended to cover them (sparse where the file system allows)."""
        offset = self.end
        self.end = offset + align_up(length, OBJECT_ALIGNMENT)
        if self._source.size() < self.end:
            self._source.truncate(self.end)
        return offset
