"""Plain helpers shared by the CLI tests (fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import json

from helpers import SharedFixture, load_expected, shared_fixtures_dir

CHAIN_ID = "dissect.hypervisor/differencing.avhdx+synthetic-parent"
PARENT_ID = "dissect.hypervisor/synthetic-parent"
ZERO_MIB_SHA256 = hashlib.sha256(bytes(1 << 20)).hexdigest()


def entry(entry_id: str) -> SharedFixture:
    """The expected.json entry with this id."""
    for e in load_expected():
        if e.id == entry_id:
            return e
    raise LookupError(entry_id)


def chunk_digests(e: SharedFixture) -> tuple[int, dict[int, str]]:
    """(chunk size, {chunk index: sha256}) of the ground-truth content; missing indices are zero."""
    data = json.loads((shared_fixtures_dir().parent / e.chunks).read_text())
    return int(data["chunk_size"]), {int(k): v for k, v in data["nonzero"].items()}
