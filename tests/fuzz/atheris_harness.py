"""Coverage-guided fuzzing of the read and write surfaces with atheris (libFuzzer for Python).

Not a pytest module (its name does not start with ``test_``): run it by hand for long sessions.
It uses the same seeds (``corpus.py``), mutations (``mutations.py``) and invariant
(``surface.py``) as ``test_fuzz_mutations.py``: every input either works or raises a
``VhdxError``; anything else (another exception, the watchdog's ``Hang``, ``MemoryBlowup``) is a
crash, which libFuzzer saves as ``crash-<sha1>`` in the working folder.

Set up (atheris ships manylinux wheels; building it from source needs clang with libFuzzer)::

    .venv/bin/pip install atheris

Run (from the repository root; libFuzzer flags after the script)::

    mkdir -p /tmp/vhdx-fuzz-corpus
    .venv/bin/python tests/fuzz/atheris_harness.py /tmp/vhdx-fuzz-corpus \\
        -max_total_time=900 -timeout=60 -rss_limit_mb=4096 -print_final_stats=1

    # replay one saved input (prints what it did, raises what it raised):
    .venv/bin/python tests/fuzz/atheris_harness.py crash-0123abcd...

    # write the mutated image of a saved input to a file (for tests/fuzz/regressions/):
    VHDX_FUZZ_EXPORT=/tmp/case.vhdx .venv/bin/python tests/fuzz/atheris_harness.py crash-0123abcd...

An input is read with ``atheris.FuzzedDataProvider``: the seed, then whether to reseal and
whether to run the write surface, then up to four mutations. ``VHDX_FUZZ_WORK`` names the
scratch folder (default: a new folder under /dev/shm or the temporary folder).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

try:
    import atheris
except ImportError:  # pragma: no cover - documented above
    sys.exit("atheris is not installed: .venv/bin/pip install atheris")

with atheris.instrument_imports(include=["vhdx"]):
    import vhdx  # noqa: F401 - instrumented for coverage
    import vhdx.ops  # noqa: F401
    import vhdx.ops.forensics  # noqa: F401
    import vhdx.ops.partitions  # noqa: F401

from crash.recording import RecordingFile  # noqa: E402
from fuzz.corpus import SEED_NAMES, Seed, build_corpus  # noqa: E402
from fuzz.mutations import KINDS, Mutation, mutate  # noqa: E402
from fuzz.surface import WriteResult, guarded, read_surface, write_surface  # noqa: E402

WORK = Path(os.environ.get("VHDX_FUZZ_WORK") or tempfile.mkdtemp(
    prefix="vhdx-atheris-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
if "VHDX_FUZZ_WORK" not in os.environ:
    atexit.register(shutil.rmtree, WORK, True)
SEEDS: dict[str, Seed] = build_corpus(WORK / "seeds")
EXPORT = os.environ.get("VHDX_FUZZ_EXPORT")
TIMEOUT = float(os.environ.get("VHDX_FUZZ_TIMEOUT", "30"))


def decode(data: bytes) -> tuple[Seed, list[Mutation], bool, bool]:
    """Turn libFuzzer's bytes into (seed, mutations, reseal, write)."""
    fdp = atheris.FuzzedDataProvider(data)
    seed = SEEDS[SEED_NAMES[fdp.ConsumeIntInRange(0, len(SEED_NAMES) - 1)]]
    seal = fdp.ConsumeBool()
    write = fdp.ConsumeIntInRange(0, 3) == 0  # a quarter of the inputs also open read-write
    muts = []
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        muts.append(Mutation(
            kind=KINDS[fdp.ConsumeIntInRange(0, len(KINDS) - 1)],
            structure=fdp.ConsumeIntInRange(0, 63),
            at=fdp.ConsumeIntInRange(0, 1 << 20),
            value=fdp.ConsumeIntInRange(0, 1 << 16),
            payload=fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 16)) or b"\0",
            other=fdp.ConsumeIntInRange(0, 63),
        ))
    return seed, muts, seal, write


def one_input(data: bytes) -> None:
    seed, muts, seal, write = decode(data)
    image = mutate(seed, muts, seal)
    if EXPORT:
        Path(EXPORT).write_bytes(image)
        print(f"{seed.name}: {'; '.join(m.describe(seed) for m in muts)}; seal={seal} -> {EXPORT}")
    folder = WORK / f"run-{seed.name}"
    opens = seed.place(folder, image)
    target = folder / seed.target
    files = [opens] if target == opens else [opens, target]
    guarded(lambda o: read_surface(opens, target, o), files, timeout=TIMEOUT)
    if write:
        rec = RecordingFile(opens.read_bytes(), name=str(opens))
        guarded(lambda o: write_surface(opens, WriteResult(), o, source=rec), [opens], timeout=TIMEOUT,
                recording=rec)


def main() -> None:
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
