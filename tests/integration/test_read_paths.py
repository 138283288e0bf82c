"""read(), readinto() and pread() agree with qemu-img's raw conversion on every kind of range.

The reader has fast paths (a single ``os.pread`` returning the bytes for a range that is one run
of blocks contiguous in the file; a direct read for a range inside one present block) next to
the general block walk. These tests aim at where they part ways: ranges inside one block,
across blocks that follow each other in the file and across blocks that do not, into unwritten
and ZERO blocks, into a partial last block that ends before the file does, and past the end.

Oracle: ``qemu-img convert -O raw`` of the same image (QEMU reads it independently).
"""

from __future__ import annotations

import array
from pathlib import Path

import pytest
from helpers import require_tool, run

import vhdx

pytestmark = pytest.mark.interop

MiB = 1 << 20
SECTOR = 512
BLOCK = 1 * MiB
SIZE = 6 * BLOCK + 3 * SECTOR  # a partial seventh block


@pytest.fixture(scope="module", params=["dynamic", "fixed"])
def image(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    require_tool("qemu-img", "qemu-io")
    subformat = request.param
    path = tmp_path_factory.mktemp(f"read-paths-{subformat}") / "disk.vhdx"
    run("qemu-img", "create", "-q", "-f", "vhdx", "-o", f"subformat={subformat},block_size={BLOCK}", str(path), str(SIZE))
    # QEMU allocates dynamic blocks in write order: 3 then 0 then 1 puts blocks 0 and 1 next to
    # each other in the file but block 3 before them, so runs both merge and break. Blocks 2 and
    # 4 stay unwritten; the partial last block gets data up to its end.
    writes = [(3 * BLOCK, BLOCK, 0x33), (0, BLOCK, 0x11), (BLOCK, BLOCK, 0x22),
              (6 * BLOCK, 3 * SECTOR, 0x66), (5 * BLOCK + 7 * SECTOR, SECTOR, 0x55)]
    args: list[str] = []
    for off, n, byte in writes:
        args += ["-c", f"write -P 0x{byte:02x} {off} {n}"]
    out = run("qemu-io", "-f", "vhdx", *args, str(path))
    assert (out.stdout + out.stderr).count("wrote ") == len(writes)
    raw = path.with_suffix(".raw")
    run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(path), str(raw))
    expected = raw.read_bytes()
    assert len(expected) == SIZE
    return path, expected


def _ranges() -> list[tuple[int, int]]:
    points = sorted({b * BLOCK + d for b in range(7) for d in (-SECTOR - 1, -1, 0, 1, SECTOR)} - {-1, -SECTOR - 1})
    lengths = (1, SECTOR, 4096, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 5, SIZE)
    return [(p, n) for p in points for n in lengths]


def test_read_pread_and_readinto_agree_with_qemu(image: tuple[Path, bytes]) -> None:
    path, expected = image
    with vhdx.open(path) as disk:
        for off, n in _ranges():
            want = expected[off : off + n]
            assert disk.pread(off, n) == want, ("pread", off, n)
            disk.seek(off)
            assert disk.read(n) == want, ("read", off, n)
            assert disk.tell() == off + len(want)
            buf = bytearray(b"\xee" * n)  # stale bytes must not survive in the part that was read
            disk.seek(off)
            got = disk.readinto(buf)
            assert got == len(want) and bytes(buf[:got]) == want, ("readinto", off, n)
            assert bytes(buf[got:]) == b"\xee" * (n - got)  # nothing written past what was read


def test_readinto_accepts_non_byte_buffers(image: tuple[Path, bytes]) -> None:
    path, expected = image
    with vhdx.open(path) as disk:
        for off in (0, BLOCK - 8, 3 * BLOCK - 4096, 6 * BLOCK - 16):
            words = array.array("I", bytes(8192))
            disk.seek(off)
            got = disk.readinto(words)
            assert got == min(8192, SIZE - off)
            assert words.tobytes()[:got] == expected[off : off + got]
            view = memoryview(bytearray(8192))[1000:5000]  # a slice: offset into its buffer
            disk.seek(off)
            got = disk.readinto(view)
            assert got == min(4000, SIZE - off)
            assert bytes(view[:got]) == expected[off : off + got]


def test_whole_disk_read_in_one_call(image: tuple[Path, bytes]) -> None:
    path, expected = image
    with vhdx.open(path) as disk:
        assert disk.read() == expected
        assert disk.read() == b""
        disk.seek(0)
        buf = bytearray(SIZE + 4096)
        assert disk.readinto(buf) == SIZE
        assert bytes(buf[:SIZE]) == expected


def test_negative_offsets_are_refused(tmp_path) -> None:
    import vhdx

    with vhdx.create(tmp_path / "n.vhdx", 8 << 20) as disk:
        disk.pwrite(0, b"x" * 4096)
    with vhdx.open(tmp_path / "n.vhdx") as disk:
        with pytest.raises(ValueError):
            disk.pread(-4096, 10)
        with pytest.raises(ValueError):
            disk.seek(-1)
