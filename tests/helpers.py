"""Test helpers: locating and decompressing the shared fixtures, gating interop tools."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Decompressed copies of the shared fixtures, reused across runs (keyed by the content hash).
CACHE_DIR = Path(os.environ.get("VHDX_TEST_CACHE", Path(tempfile.gettempdir()) / "vhdx-test-cache"))


def shared_fixtures_dir() -> Path:
    """``$VHDX_SHARED_FIXTURES``, else ``../shared/fixtures`` next to the repository."""
    env = os.environ.get("VHDX_SHARED_FIXTURES")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "fixtures"
    if not path.is_dir():
        if os.environ.get("VHDX_REQUIRE_INTEROP"):
            pytest.fail(f"shared fixtures not found at {path}")
        pytest.skip(f"shared fixtures not found at {path} (set VHDX_SHARED_FIXTURES)")
    return path


@dataclass(frozen=True)
class SharedFixture:
    """One entry of shared/fixtures/real/expected.json."""

    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.raw["id"])

    def __getattr__(self, key: str) -> Any:
        try:
            return self.raw[key]
        except KeyError:
            raise AttributeError(key) from None

    def __repr__(self) -> str:
        return f"SharedFixture({self.id})"


def load_expected() -> list[SharedFixture]:
    """Every VHDX entry of expected.json (VHD entries are out of scope)."""
    base = shared_fixtures_dir()
    entries = json.loads((base / "real" / "expected.json").read_text())
    return [SharedFixture(e) for e in entries if e.get("format") == "vhdx"]


def _decompress(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(dst.suffix + ".part")
    name = src.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(src) as z, z.open(z.namelist()[0]) as f, open(tmp, "wb") as out:
            shutil.copyfileobj(f, out, 1 << 20)
    else:
        opener = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}[Path(name).suffix]
        with opener(src, "rb") as f, open(tmp, "wb") as out:  # type: ignore[operator]
            shutil.copyfileobj(f, out, 1 << 20)
    os.replace(tmp, dst)


def fixture_path(relative: str, name: str, expected_sha256: str | None = None) -> Path:
    """Decompress ``shared/<relative>`` into the cache (once) and return the image's path.

    The cached copy is read-only to our tests: tests that modify an image copy it first.
    """
    src = shared_fixtures_dir().parent / relative
    key = hashlib.sha256(relative.encode()).hexdigest()[:16]
    folder = CACHE_DIR / key
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / name
    if not dst.exists():
        _decompress(src, dst)
    return dst


def image_of(entry: SharedFixture) -> Path:
    """Path of the decompressed image of ``entry``."""
    return fixture_path(entry.file, entry.image_name)


def copy_to(path: Path, folder: Path, name: str | None = None) -> Path:
    """Copy an image into ``folder`` (for tests that modify it)."""
    dst = folder / (name or path.name)
    shutil.copyfile(path, dst)
    return dst


def require_tool(*names: str) -> None:
    """Skip (or, when VHDX_REQUIRE_INTEROP is set, fail) unless every tool is on PATH."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        message = f"interop tool(s) not installed: {', '.join(missing)}"
        if os.environ.get("VHDX_REQUIRE_INTEROP"):
            pytest.fail(message + " (VHDX_REQUIRE_INTEROP is set)")
        pytest.skip(message)


def require_module(name: str) -> Any:
    """Import an optional test-only module, with the same skip/fail rule as ``require_tool``."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError as err:
        if os.environ.get("VHDX_REQUIRE_INTEROP"):
            pytest.fail(f"module {name} missing ({err}) and VHDX_REQUIRE_INTEROP is set")
        pytest.skip(f"module {name} not installed")


def run(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, **kwargs)


def sha256_of_disk(disk: Any, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    disk.seek(0)
    buf = bytearray(chunk)
    view = memoryview(buf)
    while True:
        n = disk.readinto(view)
        if not n:
            break
        h.update(view[:n])
    return h.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- appended for the read-path conformance tests (shared fixtures, qemu interop, chains) --------------


def expected_params(predicate: Any = None) -> list[Any]:
    """``pytest.param`` per VHDX entry of expected.json (id = the entry id), for ``parametrize``.

    Safe at collection time: when the shared fixtures are missing, returns one skipped param
    instead of aborting collection. With VHDX_REQUIRE_INTEROP set, ``load_expected`` fails
    instead, which surfaces as a collection error (CI must not pass by skipping).
    """
    try:
        entries = load_expected()
    except pytest.skip.Exception as err:
        return [pytest.param(None, id="no-shared-fixtures", marks=pytest.mark.skip(reason=str(err)))]
    return [pytest.param(e, id=e.id) for e in entries if predicate is None or predicate(e)]


class WriteModel:
    """The expected content of a virtual disk after a sequence of writes (later writes win).

    Stores the writes, not the disk, so it serves any virtual size (a 64 TiB disk with a few
    writes costs a few bytes). ``read`` replays the writes that overlap the requested range.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        # (offset, length, data): data is bytes, or an int for a repeated byte (0 for zeroing).
        self.ops: list[tuple[int, int, bytes | int]] = []

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        self.ops.append((offset, len(data), bytes(data)))

    def fill(self, offset: int, length: int, byte: int) -> None:
        self._check(offset, length)
        self.ops.append((offset, length, byte))

    def _check(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"write [{offset}, {offset + length}) outside a {self.size}-byte disk")

    def read(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self.size - offset))
        buf = bytearray(length)
        end = offset + length
        for op_off, op_len, data in self.ops:
            lo, hi = max(offset, op_off), min(end, op_off + op_len)
            if lo >= hi:
                continue
            if isinstance(data, int):
                buf[lo - offset : hi - offset] = bytes([data]) * (hi - lo)
            else:
                buf[lo - offset : hi - offset] = data[lo - op_off : hi - op_off]
        return bytes(buf)

    def written_ranges(self) -> list[tuple[int, int]]:
        """[start, end) of every write, in order (zeroing included)."""
        return [(off, off + n) for off, n, _ in self.ops]

    def nonzero_ranges(self) -> list[tuple[int, int]]:
        """[start, end) ranges outside which the disk is certainly all zeros."""
        out = []
        for off, n, data in self.ops:
            if (isinstance(data, int) and data) or (isinstance(data, bytes) and any(data)):
                out.append((off, off + n))
        return out

    def full(self) -> bytes:
        """The whole disk (small disks only)."""
        return self.read(0, self.size)
