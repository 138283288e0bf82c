"""Images written by QEMU at test time read back byte-exact through us.

Oracle: a model of the writes (helpers.WriteModel) we ask qemu-io to perform, and for small
images also ``qemu-img convert -O raw``. QEMU is an independent producer: its VHDX driver
lays out files its own way (BAT entries in the ZERO state by default, blocks allocated at the
end of the file, a partial last block for sizes that are not a multiple of the block size).

QEMU's VHDX driver only supports 512-byte logical sectors (VHDX-FORMAT.md section 14), so
every image here has them; qemu-io is given sector-aligned offsets and lengths.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import WriteModel, require_tool, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vhdx

pytestmark = pytest.mark.interop

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
SECTOR = 512
# A sector bitmap chunk covers 2**23 sectors: 4 GiB of virtual space with 512-byte sectors. BAT
# entries are interleaved per chunk, so offsets around these are where index math goes wrong.
CHUNK_SPAN = (1 << 23) * SECTOR
QEMU_MAX_SIZE = 64 * TiB  # the largest virtual size qemu-img accepts for VHDX
BLOCK_SIZES = [1 * MiB, 2 * MiB, 8 * MiB, 32 * MiB, 64 * MiB, 256 * MiB]
FULL_COMPARE_LIMIT = 64 * MiB  # images up to this size are compared whole (with qemu-img convert)


@pytest.fixture(autouse=True)
def _qemu() -> None:
    require_tool("qemu-img", "qemu-io")


# --- driving QEMU ------------------------------------------------------------------------------------


def qemu_create(path: Path, size: int, subformat: str, block_size: int, block_state_zero: bool | None = None) -> None:
    opts = f"subformat={subformat},block_size={block_size}"
    if block_state_zero is not None:
        opts += f",block_state_zero={'on' if block_state_zero else 'off'}"
    run("qemu-img", "create", "-q", "-f", "vhdx", "-o", opts, str(path), str(size))


class Writes:
    """A list of qemu-io writes, mirrored into a WriteModel as they are planned."""

    def __init__(self, size: int) -> None:
        self.model = WriteModel(size)
        self.commands: list[str] = []
        self._next_pattern = 0

    def pattern(self, offset: int, length: int) -> None:
        # Patterns 0x01..0xff in turn, so overlapping writes are told apart and ordering matters.
        byte = self._next_pattern % 255 + 1
        self._next_pattern += 1
        self.commands.append(f"write -P 0x{byte:02x} {offset} {length}")
        self.model.fill(offset, length, byte)

    def zero(self, offset: int, length: int) -> None:
        self.commands.append(f"write -z {offset} {length}")
        self.model.fill(offset, length, 0)

    def apply(self, path: Path) -> None:
        args: list[str] = []
        for c in self.commands:
            args += ["-c", c]
        out = run("qemu-io", "-f", "vhdx", *args, str(path))
        text = out.stdout + out.stderr
        # qemu-io reports a failed command on stdout and may still exit 0: count the successes.
        assert text.count("wrote ") == len(self.commands) and "failed" not in text, text


def plan_writes(
    rng: random.Random, size: int, block_size: int, *, n_random: int = 10, max_sectors: int = 2048
) -> Writes:
    """First and last sectors, writes straddling block and chunk boundaries, random writes, then
    zeroing over parts of earlier writes and a few writes over the zeroed ranges."""
    w = Writes(size)
    sectors = size // SECTOR

    def straddle(boundary: int) -> None:
        before = min(boundary, rng.randint(1, 16) * SECTOR)
        after = min(size - boundary, rng.randint(1, 16) * SECTOR)
        if before + after:
            w.pattern(boundary - before, before + after)

    w.pattern(0, SECTOR)
    w.pattern(size - SECTOR, SECTOR)
    blocks = range(block_size, size, block_size)
    for b in {blocks[0], blocks[-1], rng.choice(blocks)} if blocks else ():
        straddle(b)
    chunks = range(CHUNK_SPAN, size, CHUNK_SPAN)
    for c in {chunks[0], chunks[-1], rng.choice(chunks)} if chunks else ():
        straddle(c)
    for _ in range(n_random):
        n = rng.randint(1, min(max_sectors, sectors))
        w.pattern(rng.randrange(0, sectors - n + 1) * SECTOR, n * SECTOR)
    earlier = w.model.written_ranges()
    for start, end in rng.sample(earlier, min(4, len(earlier))):
        first = rng.randrange(start, end, SECTOR)
        n = rng.randint(1, 64) * SECTOR
        w.zero(first, min(n, size - first))
    n = rng.randint(1, min(max_sectors, sectors))
    w.zero(rng.randrange(0, sectors - n + 1) * SECTOR, n * SECTOR)
    for start, end in rng.sample(earlier, min(2, len(earlier))):
        w.pattern(start, min(end - start, SECTOR))
    return w


# --- checking through our reader -------------------------------------------------------------------------


def _grow(start: int, end: int, size: int, by: int = SECTOR) -> tuple[int, int]:
    return max(0, start - by), min(size, end + by)


def verify(path: Path, w: Writes, rng: random.Random, *, block_size: int, subformat: str) -> None:
    model = w.model
    size = model.size
    with vhdx.open(path) as disk:
        assert (disk.size, disk.block_size, disk.logical_sector_size) == (size, block_size, SECTOR)
        assert disk.disk_type == subformat
        # Every written range, with a sector of context on either side.
        for start, end in model.written_ranges():
            lo, hi = _grow(start, end, size)
            assert disk.pread(lo, hi - lo) == model.read(lo, hi - lo), f"[0x{lo:x}, 0x{hi:x})"
        # Some ranges nobody wrote (or that random writes may have hit: the model knows).
        for _ in range(16):
            n = rng.randint(1, 256) * SECTOR
            off = rng.randrange(0, size - n + 1, SECTOR)
            assert disk.pread(off, n) == model.read(off, n), f"[0x{off:x}, 0x{off + n:x})"
        check_extents(path, disk, model)
        if size <= FULL_COMPARE_LIMIT:
            disk.seek(0)
            ours = disk.read()
            assert ours == model.full()
            raw = path.with_suffix(".raw")
            run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(path), str(raw))
            assert hashlib.sha256(raw.read_bytes()).hexdigest() == hashlib.sha256(ours).hexdigest()
            raw.unlink()


def _overlaps(start: int, end: int, ranges: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    for a, b in ranges:
        lo, hi = max(start, a), min(end, b)
        if lo < hi:
            yield lo, hi


def check_extents(path: Path, disk: vhdx.VirtualDisk, model: WriteModel) -> None:
    """extents() tiles the disk; what it calls zero or unallocated holds no written data; what it
    calls data is in the file at file_offset."""
    extents = list(disk.extents())
    assert extents[0].virtual_offset == 0 and extents[-1].end == disk.size
    assert all(a.end == b.virtual_offset for a, b in zip(extents, extents[1:]))
    nonzero = model.nonzero_ranges()
    with open(path, "rb") as f:
        for e in extents:
            assert e.depth == 0
            if e.state != "data":
                for lo, hi in _overlaps(e.virtual_offset, e.end, nonzero):
                    assert not any(model.read(lo, hi - lo)), f"{e} hides written data at 0x{lo:x}"
                continue
            assert e.file_offset is not None
            # Check the mapping where data was written (and the extent's first bytes).
            for lo, hi in [(e.virtual_offset, min(e.end, e.virtual_offset + 4 * KiB))] + list(
                _overlaps(e.virtual_offset, e.end, nonzero)
            ):
                hi = min(hi, lo + 64 * KiB)
                f.seek(e.file_offset + (lo - e.virtual_offset))
                stored = f.read(hi - lo)
                # A partial last block may end before the file does; the rest reads as zeros.
                stored += bytes(hi - lo - len(stored))
                assert stored == model.read(lo, hi - lo), f"{e} at 0x{lo:x}"


# --- parametrized cases --------------------------------------------------------------------------------


def _small_cases() -> Iterator[object]:
    for bs in BLOCK_SIZES:
        for subformat in ("dynamic", "fixed"):
            tag = f"{subformat}-bs{bs // MiB}M"
            # Smaller than most blocks and not a multiple of any block size.
            yield pytest.param(subformat, bs, 5 * MiB + 3 * SECTOR, None, id=f"{tag}-5M+3s")
            # Several blocks plus a partial last one.
            yield pytest.param(subformat, bs, 2 * bs + MiB + SECTOR, None, id=f"{tag}-2b+1M+1s")
            if bs <= 8 * MiB:
                yield pytest.param(subformat, bs, 4 * bs, None, id=f"{tag}-4b")
    # block_state_zero=off: fixed images get FULLY_PRESENT blocks, dynamic ones NOT_PRESENT entries.
    for bs in (1 * MiB, 32 * MiB):
        for subformat in ("dynamic", "fixed"):
            yield pytest.param(subformat, bs, 3 * bs + 7 * SECTOR, False, id=f"{subformat}-bs{bs // MiB}M-nozero")


@pytest.mark.parametrize(("subformat", "block_size", "size", "block_state_zero"), list(_small_cases()))
def test_qemu_written_image_reads_back(
    tmp_path: Path, subformat: str, block_size: int, size: int, block_state_zero: bool | None
) -> None:
    rng = random.Random(f"{subformat}/{block_size}/{size}/{block_state_zero}")
    path = tmp_path / "disk.vhdx"
    qemu_create(path, size, subformat, block_size, block_state_zero)
    w = plan_writes(rng, size, block_size)
    w.apply(path)
    verify(path, w, rng, block_size=block_size, subformat=subformat)


@pytest.mark.parametrize("block_size", BLOCK_SIZES, ids=[f"bs{b // MiB}M" for b in BLOCK_SIZES])
def test_qemu_written_huge_dynamic_image_reads_back(tmp_path: Path, block_size: int) -> None:
    # Up to 64 TiB, the most qemu-img accepts. With small blocks the BAT of a 64 TiB disk is
    # hundreds of MiB (and our open loads it whole), so those stop at 2**20 blocks: still
    # hundreds of sector-bitmap chunks, so the interleaved BAT index math is exercised far out.
    size = min(QEMU_MAX_SIZE, block_size << 20)
    rng = random.Random(f"huge/{block_size}")
    path = tmp_path / "huge.vhdx"
    qemu_create(path, size, "dynamic", block_size)
    w = plan_writes(rng, size, block_size, n_random=12)
    w.apply(path)
    verify(path, w, rng, block_size=block_size, subformat="dynamic")


@st.composite
def _scenarios(draw: st.DrawFn) -> tuple[str, int, int, list[tuple[bool, int, int]]]:
    subformat = draw(st.sampled_from(["dynamic", "fixed"]))
    block_size = draw(st.sampled_from([1 * MiB, 2 * MiB, 8 * MiB]))
    sectors = draw(st.integers(min_value=2 * MiB // SECTOR, max_value=12 * MiB // SECTOR))
    ops = []
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        first = draw(st.integers(min_value=0, max_value=sectors - 1))
        n = draw(st.integers(min_value=1, max_value=min(4096, sectors - first)))
        ops.append((draw(st.booleans()), first * SECTOR, n * SECTOR))
    return subformat, block_size, sectors * SECTOR, ops


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=_scenarios())
def test_qemu_written_image_reads_back_hypothesis(
    tmp_path_factory: pytest.TempPathFactory, scenario: tuple[str, int, int, list[tuple[bool, int, int]]]
) -> None:
    subformat, block_size, size, ops = scenario
    path = tmp_path_factory.mktemp("hyp") / "disk.vhdx"
    qemu_create(path, size, subformat, block_size)
    w = Writes(size)
    for is_zero, off, n in ops:
        (w.zero if is_zero else w.pattern)(off, n)
    w.apply(path)
    verify(path, w, random.Random(0), block_size=block_size, subformat=subformat)
