"""load_image refuses files larger than MAX_FILE_SIZE, whatever their content.

Oracle: the documented limit (README "Limits", constants.MAX_FILE_SIZE). The source is in memory:
the bytes of fixtures/sample.vhdx, with size() reporting a length that no real test file can have.
"""

from __future__ import annotations

import pytest
from helpers import REPO_ROOT

from vhdx.constants import MAX_FILE_SIZE
from vhdx.engine.image import load_image
from vhdx.errors import CorruptStructureError

SAMPLE = REPO_ROOT / "fixtures" / "sample.vhdx"


class SizedSource:
    """Read-only RandomAccess over ``data``, claiming to be ``size`` bytes (zeros past ``data``)."""

    def __init__(self, data: bytes, size: int) -> None:
        self.name = "sized-source"
        self.writable = False
        self._data = data
        self._size = size

    def size(self) -> int:
        return self._size

    def readinto(self, offset: int, buf: memoryview) -> int:
        n = max(0, min(len(buf), self._size - offset))
        chunk = self._data[offset : offset + n]
        buf[: len(chunk)] = chunk
        buf[len(chunk) : n] = bytes(n - len(chunk))
        return n

    def pread(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        n = self.readinto(offset, memoryview(buf))
        return bytes(buf[:n])

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def sample_bytes() -> bytes:
    return SAMPLE.read_bytes()


def test_file_larger_than_limit_is_rejected(sample_bytes: bytes) -> None:
    with pytest.raises(CorruptStructureError, match="larger than any valid VHDX"):
        load_image(SizedSource(sample_bytes, MAX_FILE_SIZE + 1))


def test_file_at_limit_still_opens(sample_bytes: bytes) -> None:
    image = load_image(SizedSource(sample_bytes, MAX_FILE_SIZE))
    assert image.geometry.block_size > 0
