"""Every input the fuzzers found breaking the invariant, kept as a regression (issue #7).

Each case is a gzip-compressed image under ``tests/fuzz/regressions/``, listed in ``CASES`` with
the seed it came from (so a differencing case gets its parent beside it), the finding, and the
fix. The test runs the whole read surface and a writable session on it under the invariant of
``surface.py`` (only ``VhdxError`` escapes, no hang, memory within the bound), plus the specific
expectation of the case.

Turning a finding into a case: the hypothesis tests save failing inputs with
``VHDX_FUZZ_SAVE=<folder>``, the atheris harness with ``VHDX_FUZZ_EXPORT=<file>``; gzip the image
into the folder (``gzip -9``) and add a line here.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import pytest

import vhdx
from crash.recording import RecordingFile

from .corpus import Seed, build_corpus
from .surface import WriteResult, guarded, read_surface, write_surface

REGRESSIONS = Path(__file__).parent / "regressions"


@dataclass(frozen=True)
class Case:
    file: str
    seed: str  # the corpus seed it was mutated from (its companions are placed beside it)
    finding: str
    open_error: type[vhdx.VhdxError] | None  # what vhdx.open raises now (None: it opens)


CASES = [
    Case("check-declared-bat-beyond-file.vhdx.gz", "dirty_log",
         "metadata declaring a 16 TiB disk over a 1 MiB BAT region: check padded the missing BAT entries "
         "(773 MB peak for a 9 MiB file); fixed in ops/_check_scan.py (entries not examined, INFO finding)",
         vhdx.CorruptStructureError),
    Case("check-log-offset-past-int64.vhdx.gz", "dynamic",
         "header 2 (resealed, current) with LogOffset 0x8000000000100000: check's free-space pass raised "
         "OverflowError converting it to int64; fixed in ops/_check_scan.py (ranges clamped to the file)",
         vhdx.TruncatedError),
    Case("fixed-write-reserved-block-offset.vhdx.gz", "fixed",
         "(atheris) a fixed disk whose NOT_PRESENT / state-5 entries name offsets near 2**61: a write to those "
         "blocks reused the reserved FileOffsetMB, writing zeros and data terabytes past the end (MemoryError on "
         "a RecordingFile; on a file, a huge sparse file, or writes into the BAT or metadata when the offset "
         "names them); fixed in engine/writer.py (_reusable: only free space inside the used file is taken back)",
         None),
    Case("write-unused-bat-slot-moves-file-end.vhdx.gz", "sector4k",
         "(hypothesis, ci profile) bytes spliced into the BAT's unused slots (past the last payload entry of a "
         "4096-byte-sector disk, never read or validated): the writable open took a stray PRESENT value there "
         "as the end of the used file, so the first allocation extended the file to ~2**60 (MemoryError / "
         "OverflowError on a RecordingFile); fixed in engine/writer.py (_used_end counts only validated entries)",
         None),
]


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Seed]:
    return build_corpus(tmp_path_factory.mktemp("regression-seeds"))


def test_every_committed_input_is_listed() -> None:
    assert sorted(p.name for p in REGRESSIONS.glob("*.gz")) == sorted(c.file for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.file.split(".")[0] for c in CASES])
def test_regression(case: Case, seeds: dict[str, Seed], tmp_path: Path) -> None:
    seed = seeds[case.seed]
    data = gzip.decompress((REGRESSIONS / case.file).read_bytes())
    opens = seed.place(tmp_path, data)
    target = tmp_path / seed.target
    outcome = guarded(lambda o: read_surface(opens, target, o), [opens, target])
    assert outcome.steps["check"] == "ok", outcome.steps  # a check always reports
    expected = "ok" if case.open_error is None else case.open_error.__name__
    assert outcome.steps["open"] == expected, outcome.steps
    rec = RecordingFile(opens.read_bytes(), name=str(opens))
    guarded(lambda o: write_surface(opens, WriteResult(), o, source=rec), [opens], recording=rec)
