"""Mutation fuzzing of the whole read surface and of writable opens (issue #7, items 1 and 3).

Inputs: the seeds of ``corpus.py`` (dynamic, fixed, differencing with partially present blocks,
the parent of a chain, 4096-byte sectors, a pending log), changed by 1-4 structure-aware mutations
(``mutations.py``: flips, overwrites, edge values such as 0, 0xFFFFFFFF and 2^63, splices,
truncation) inside the header section, region tables, metadata table and items, parent locator,
BAT, sector bitmaps and log entries, resealed or not.

Invariant (``surface.py``): every entry point either works or raises a ``VhdxError`` subclass;
no other exception, no hang (SIGALRM watchdog), no allocation past the memory bound
(tracemalloc). The write test adds: a writable session on a mutated image either is refused with
a ``VhdxError`` or leaves an image that opens and reads back what was written, and every byte it
wrote lies where the checked metadata allows (recorded with ``crash.recording.RecordingFile``).

Each test runs once per seed (so every kind of image gets its share, and no single test runs
long); examples per seed follow the hypothesis profile (tests/conftest.py: 60 for ``dev``, 150
for ``ci``) and ``VHDX_FUZZ_EXAMPLES`` overrides them. ``VHDX_FUZZ_SAVE=<folder>`` saves every input that breaks
the invariant there (to turn into a regression under tests/fuzz/regressions/).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vhdx
from crash.recording import RecordingFile, Truncate, Write
from vhdx.constants import (
    FILE_IDENTIFIER_SIZE,
    HEADER_1_OFFSET,
    HEADER_2_OFFSET,
    HEADER_SECTION_SIZE,
    HEADER_SIZE,
    REGION_TABLE_1_OFFSET,
    REGION_TABLE_2_OFFSET,
    REGION_TABLE_SIZE,
    SECTOR_BITMAP_BLOCK_SIZE,
    PayloadBlockState,
    SectorBitmapState,
)
from vhdx.engine.writer import WritableEngine
from vhdx.structs import bat as bat_struct

from .corpus import SEED_NAMES, Seed, build_corpus
from .mutations import KINDS, Mutation, mutate
from .surface import Outcome, WriteResult, guarded, read_surface, write_surface

EXAMPLES = int(os.environ.get("VHDX_FUZZ_EXAMPLES", "0")) or settings.default.max_examples
SAVE = os.environ.get("VHDX_FUZZ_SAVE")
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

STATS: dict[str, dict[str, int]] = {}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Seed]:
    return build_corpus(tmp_path_factory.mktemp("fuzz-seeds"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Scratch space for the mutated files: memory-backed when /dev/shm exists (each example
    writes a few 8 MiB files), removed afterwards."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path_factory.mktemp("fuzz-work")
        return
    folder = Path(tempfile.mkdtemp(prefix="vhdx-fuzz-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@st.composite
def mutation_lists(draw: st.DrawFn) -> tuple[list[Mutation], bool]:
    count = draw(st.integers(1, 4))
    muts = []
    for _ in range(count):
        muts.append(Mutation(
            kind=draw(st.sampled_from(KINDS)),
            structure=draw(st.integers(0, 63)),
            at=draw(st.integers(0, 1 << 20)),
            value=draw(st.integers(0, 1 << 16)),
            payload=draw(st.binary(min_size=1, max_size=16)),
            other=draw(st.integers(0, 63)),
        ))
    return muts, draw(st.booleans())


def _save(seed: Seed, data: bytes, label: str) -> None:
    if not SAVE:
        return
    folder = Path(SAVE)
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(data).hexdigest()[:16]
    (folder / f"{label}-{seed.name}-{digest}.bin").write_bytes(data)


def _tally(test: str, outcome: Outcome) -> None:
    counts = STATS.setdefault(test, {})
    counts["examples"] = counts.get("examples", 0) + 1
    for name, result in outcome.steps.items():
        key = f"{name}:{result}"
        counts[key] = counts.get(key, 0) + 1


def test_seeds_are_valid_and_open(seeds: dict[str, Seed], work: Path) -> None:
    """Positive control: every unmutated seed passes the whole read surface without an error
    (so a VhdxError in the fuzz runs comes from the mutation, not from a broken seed)."""
    assert set(seeds) == set(SEED_NAMES)
    for seed in seeds.values():
        opens = seed.place(work / f"control-{seed.name}", seed.data)
        outcome = guarded(lambda o, p=opens, s=seed: read_surface(p, p.parent / s.target, o), [opens])
        assert set(outcome.steps.values()) == {"ok"}, (seed.name, outcome.steps)
    with vhdx.open(work / "control-dirty_log" / "image.vhdx") as disk:
        assert disk.has_pending_log  # the dirty_log seed really holds an unreplayed entry


@FUZZ_SETTINGS
@pytest.mark.parametrize("name", SEED_NAMES)
@given(case=mutation_lists())
def test_read_surface_survives_mutations(seeds: dict[str, Seed], work: Path, name: str,
                                         case: tuple[list[Mutation], bool]) -> None:
    muts, seal = case
    seed = seeds[name]
    data = mutate(seed, muts, seal)
    folder = work / f"read-{name}"
    opens = seed.place(folder, data)
    target = folder / seed.target
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    try:
        outcome = guarded(lambda o: read_surface(opens, target, o), [opens, target] if target != opens else [opens])
    except BaseException:
        _save(seed, data, "read")
        raise
    _tally("read", outcome)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert after == before, "a read-only entry point changed a file"


# --- writes ---------------------------------------------------------------------------------------


def _allowed_ranges(engine: WritableEngine, growth_start: int) -> list[tuple[int, int]]:
    """Where a writable session may write, per the metadata the open checked: the two 4 KiB
    headers and the two region tables (through the header protocol and the log), the log, every
    region, the blocks the BAT gives storage, and new space from the end of the used file on."""
    image = engine.image
    header = image.headers.current
    out = [(HEADER_1_OFFSET, HEADER_1_OFFSET + HEADER_SIZE), (HEADER_2_OFFSET, HEADER_2_OFFSET + HEADER_SIZE),
           (REGION_TABLE_1_OFFSET, REGION_TABLE_1_OFFSET + REGION_TABLE_SIZE),
           (REGION_TABLE_2_OFFSET, REGION_TABLE_2_OFFSET + REGION_TABLE_SIZE)]
    if header.log_length:
        out.append((header.log_offset, header.log_offset + header.log_length))
    out += [(e.file_offset, e.end) for e in image.region_table.entries]
    g = image.geometry
    payload = image.view.payload_entries
    states = bat_struct.states(payload)
    offsets = bat_struct.file_offsets(payload)
    for block in range(len(payload)):
        if int(states[block]) in (PayloadBlockState.FULLY_PRESENT, PayloadBlockState.PARTIALLY_PRESENT):
            out.append((int(offsets[block]), int(offsets[block]) + g.block_size))
    for state, offset in zip(image.view.bitmap_states.tolist(), image.view.bitmap_offsets.tolist()):
        if state == SectorBitmapState.PRESENT:
            out.append((int(offset), int(offset) + SECTOR_BITMAP_BLOCK_SIZE))
    out.append((growth_start, 1 << 64))
    return out


def _inside(ranges: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether [start, end) is covered by the union of ``ranges``."""
    pos = start
    for lo, hi in sorted(ranges):
        if lo <= pos < hi:
            pos = hi
        if pos >= end:
            return True
    return pos >= end


class _Probe:
    """Captures the writable engine of the session as it is created: the ranges its open checked,
    where its free space began, and how many writes the open itself made (a log replay)."""

    def __init__(self, rec: RecordingFile) -> None:
        self.rec = rec
        self.engine: WritableEngine | None = None
        self.growth_start = 0
        self.ops_at_open = 0

    def __enter__(self) -> _Probe:
        real_init = self.real_init = WritableEngine.__init__
        probe = self

        def spy_init(engine: WritableEngine, *args: object, **kwargs: object) -> None:
            real_init(engine, *args, **kwargs)  # type: ignore[arg-type]
            if probe.engine is None:
                probe.engine = engine
                probe.growth_start = engine.allocator.end
                probe.ops_at_open = len(probe.rec.ops)

        WritableEngine.__init__ = spy_init  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        WritableEngine.__init__ = self.real_init  # type: ignore[method-assign]


def test_write_oracle_sees_a_stray_write(seeds: dict[str, Seed], work: Path) -> None:
    """Negative control for the write test's oracle: the ranges it allows cover every write of a
    real session on a valid seed, and not the file identifier, the reserved bytes after a header
    or the reserved end of the header section."""
    seed = seeds["dynamic"]
    opens = seed.place(work / "oracle", seed.data)
    rec = RecordingFile(seed.data, name=str(opens))
    with _Probe(rec) as probe:
        write_surface(opens, WriteResult(), Outcome(), source=rec)
    assert probe.engine is not None
    allowed = _allowed_ranges(probe.engine, probe.growth_start)
    writes = [op for op in rec.ops[probe.ops_at_open :] if isinstance(op, Write)]
    assert writes and all(_inside(allowed, w.offset, w.offset + len(w.data)) for w in writes)
    for start, end in ((0, 8), (HEADER_1_OFFSET + HEADER_SIZE, HEADER_1_OFFSET + HEADER_SIZE + 1),
                       (REGION_TABLE_2_OFFSET + REGION_TABLE_SIZE, HEADER_SECTION_SIZE)):
        assert not _inside(allowed, start, end), hex(start)


def _opens(path: Path) -> bool:
    try:
        with vhdx.open(path, parent_search=[path.parent]) as disk:
            disk.pread(0, 4096)
        return True
    except vhdx.VhdxError:
        return False


@FUZZ_SETTINGS
@pytest.mark.parametrize("name", SEED_NAMES)
@given(case=mutation_lists())
def test_writes_stay_inside_the_image(seeds: dict[str, Seed], work: Path, name: str,
                                      case: tuple[list[Mutation], bool]) -> None:
    muts, seal = case
    seed = seeds[name]
    data = mutate(seed, muts, seal)
    folder = work / f"write-{name}"
    opens = seed.place(folder, data)
    companions = {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in seed.companions}
    # The opened file is read from and written to a RecordingFile; the files on disk stay as they are.
    initial = opens.read_bytes()
    rec = RecordingFile(initial, name=str(opens))
    result = WriteResult()
    try:
        with _Probe(rec) as probe:
            outcome = guarded(lambda o: write_surface(opens, result, o, source=rec), [opens], recording=rec)
    except BaseException:
        _save(seed, data, "write")
        raise
    _tally("write", outcome)
    for n, digest in companions.items():
        assert hashlib.sha256((folder / n).read_bytes()).hexdigest() == digest, f"{n} (not the opened file) was written"
    # A log replayed by the writable open writes where the log says, but never over the file
    # identifier (VHDX-FORMAT.md 10.2 item 6); everything after that lies inside what was checked.
    replay_ops = rec.ops[: probe.ops_at_open] if probe.engine is not None else rec.ops
    for op in replay_ops:
        if isinstance(op, Write):
            assert op.offset >= FILE_IDENTIFIER_SIZE, f"replay wrote at {op.offset:#x}, into the file identifier"
    if probe.engine is not None:
        allowed = _allowed_ranges(probe.engine, probe.growth_start)
        for op in rec.ops[probe.ops_at_open :]:
            if isinstance(op, Write):
                assert _inside(allowed, op.offset, op.offset + len(op.data)), (
                    f"write of {len(op.data)} bytes at {op.offset:#x} lies outside every structure the open checked")
            elif isinstance(op, Truncate):
                assert op.size >= probe.growth_start, f"the session cut the file to {op.size:#x}"
    if not result.opened:
        return
    original_opened = _opens(opens)
    opens.write_bytes(bytes(rec.data))
    if result.error is not None:
        # A write refused half-way must not have made the image worse than it was.
        if original_opened and not _opens(opens):
            _save(seed, data, "write-worse")
            raise AssertionError(f"a write session that failed with {result.error} left an image that no longer opens")
        return
    try:
        with vhdx.open(opens, parent_search=[folder]) as disk:
            for offset, expect in result.written:
                assert disk.pread(offset, len(expect)) == expect, f"bytes written at {offset:#x} did not read back"
    except vhdx.VhdxError as err:
        _save(seed, data, "write-worse")
        raise AssertionError(f"an accepted write session left an image that does not open: {err}") from err


def test_report_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Print what the fuzz tests above ran into (examples, and per step how often each answer
    came), for the record; fails only if they ran no example at all."""
    with capsys.disabled():
        for test, counts in sorted(STATS.items()):
            print(f"\n[fuzz {test}] {counts.get('examples', 0)} examples: "
                  + ", ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != "examples"))
    if STATS:
        assert all(c.get("examples", 0) > 0 for c in STATS.values())
