"""``vhdx serve`` against real NBD clients: nbdinfo (and --map), nbdcopy, qemu-img, qemu-io.

Ground truth is what our library reads from the same image (itself checked against expected.json
and qemu elsewhere), and for writes a model of what qemu-io wrote.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
from pathlib import Path

import pytest

import vhdx
from helpers import WriteModel, require_tool, run

from .nbd_support import Server

MiB = 1 << 20


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def sparse_image(tmp_path: Path) -> Path:
    """A dynamic image with data, ZERO blocks, holes, and a partial last block."""
    path = tmp_path / "disk.vhdx"
    rng = random.Random(7)
    with vhdx.create(path, 40 * MiB + 3 * 512, block_size=1 * MiB) as d:
        for block in (0, 1, 5, 17, 38):
            d.pwrite(block * MiB + rng.randrange(0, 4096), rng.randbytes(rng.randrange(1, 300_000)))
        d.pwrite(d.size - 700, rng.randbytes(700))
        d.write_zeroes(5 * MiB, MiB)
    return path


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """A 4096-byte-sector differencing chain of depth 3 (qemu cannot open it; we can serve it)."""
    base = tmp_path / "base.vhdx"
    rng = random.Random(11)
    with vhdx.create(base, 16 * MiB, block_size=4 * MiB, logical_sector_size=4096) as d:
        d.pwrite(0, rng.randbytes(6 * MiB))
    mid = tmp_path / "mid.avhdx"
    with vhdx.create(mid, parent=base, block_size=1 * MiB) as d:
        d.pwrite(3 * MiB + 4096, rng.randbytes(3 * 4096))
    top = tmp_path / "top.avhdx"
    with vhdx.create(top, parent=mid, block_size=2 * MiB) as d:
        d.pwrite(10 * MiB, rng.randbytes(MiB))
    return top


def _content(path: Path) -> bytes:
    with vhdx.open(path) as d:
        return d.read()


def test_nbdinfo_reports_the_export(sparse_image: Path) -> None:
    require_tool("nbdinfo")
    with Server(sparse_image) as srv:
        info = json.loads(run("nbdinfo", "--json", srv.url).stdout)
    export = info["exports"][0]
    assert export["export-size"] == 40 * MiB + 3 * 512
    assert export["is_read_only"] is True
    assert "base:allocation" in export["contexts"]
    assert export["export-name"] == "disk.vhdx"


def test_nbdinfo_map_matches_extents(sparse_image: Path) -> None:
    require_tool("nbdinfo")
    with Server(sparse_image) as srv:
        out = json.loads(run("nbdinfo", "--map", "--json", srv.url).stdout)
    got = [(e["offset"], e["length"], e["type"] & 3) for e in out]
    with vhdx.open(sparse_image) as d:
        want = []
        for e in d.extents():
            flags = 0 if e.state == "data" else 3
            if want and want[-1][2] == flags and want[-1][0] + want[-1][1] == e.virtual_offset:
                want[-1] = (want[-1][0], want[-1][1] + e.length, flags)
            else:
                want.append((e.virtual_offset, e.length, flags))
    assert got == want
    assert any(t == 3 for *_, t in got) and any(t == 0 for *_, t in got)


def test_nbdcopy_and_qemu_read_the_same_bytes(sparse_image: Path, tmp_path: Path) -> None:
    require_tool("nbdcopy", "qemu-img")
    want = _content(sparse_image)
    with Server(sparse_image) as srv:
        out = tmp_path / "copy.raw"
        run("nbdcopy", srv.url, str(out))
        assert _sha(out.read_bytes()) == _sha(want)
        raw = tmp_path / "want.raw"
        raw.write_bytes(want)
        run("qemu-img", "compare", "-f", "raw", str(raw), srv.url)
        q = tmp_path / "q.raw"
        run("qemu-img", "convert", "-O", "raw", srv.url, str(q))
        assert _sha(q.read_bytes()) == _sha(want)


def test_differencing_chain_is_served_whole(chain: Path, tmp_path: Path) -> None:
    require_tool("nbdcopy")
    want = _content(chain)
    with Server(chain) as srv:
        out = tmp_path / "copy.raw"
        run("nbdcopy", srv.url, str(out))
    assert _sha(out.read_bytes()) == _sha(want)


def test_several_clients_at_once(sparse_image: Path, tmp_path: Path) -> None:
    require_tool("nbdcopy")
    want = _sha(_content(sparse_image))
    with Server(sparse_image) as srv:
        outs = [tmp_path / f"c{i}.raw" for i in range(4)]
        procs = [subprocess.Popen(["nbdcopy", srv.url, str(o)]) for o in outs]
        assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
        assert srv.alive()
    assert all(_sha(o.read_bytes()) == want for o in outs)


def test_read_only_export_refuses_qemu_io_writes(sparse_image: Path) -> None:
    require_tool("qemu-io")
    before = hashlib.sha256(sparse_image.read_bytes()).hexdigest()
    with Server(sparse_image) as srv:
        r = run("qemu-io", "-f", "raw", "-c", "write -P 0x55 0 4096", srv.url, check=False)
        assert r.returncode != 0 or "failed" in (r.stdout + r.stderr).lower()
        assert srv.alive()
    assert hashlib.sha256(sparse_image.read_bytes()).hexdigest() == before


def test_qemu_io_writes_through_a_writable_export(sparse_image: Path) -> None:
    require_tool("qemu-io", "qemu-img")
    size = 40 * MiB + 3 * 512
    model = WriteModel(size)
    model.write(0, _content(sparse_image))
    rng = random.Random(3)
    commands = []
    for _ in range(25):
        length = rng.randrange(1, 200) * 512
        offset = rng.randrange(0, (size - length) // 512) * 512
        pattern = rng.randrange(1, 256)
        kind = rng.random()
        if kind < 0.7:
            commands.append(f"write -P {pattern} {offset} {length}")
            model.fill(offset, length, pattern)
        elif kind < 0.85:
            commands.append(f"write -z {offset} {length}")
            model.fill(offset, length, 0)
        else:
            # An aligned whole-block discard (smaller ones may leave data: TRIM is advisory).
            block = rng.randrange(0, 40)
            commands.append(f"discard {block * MiB} {MiB}")
            model.fill(block * MiB, MiB, 0)
    commands.append("flush")
    with Server(sparse_image, "--writable") as srv:
        args = ["qemu-io", "-f", "raw"]
        for c in commands:
            args += ["-c", c]
        r = run(*args, srv.url)
        assert "failed" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
        code, err = srv.stop()
        assert code == 0, err
    assert _content(sparse_image) == model.read(0, size)
    with vhdx.open(sparse_image) as d:
        assert d.info().log_state == "empty"
    check = run("qemu-img", "check", str(sparse_image), check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_nbdcopy_into_a_writable_export(tmp_path: Path) -> None:
    require_tool("nbdcopy")
    rng = random.Random(5)
    src = tmp_path / "src.raw"
    data = bytearray(12 * MiB)
    data[MiB : 3 * MiB] = rng.randbytes(2 * MiB)
    data[9 * MiB + 17 : 9 * MiB + 5000] = rng.randbytes(5000 - 17)
    src.write_bytes(bytes(data))
    dst = tmp_path / "dst.vhdx"
    vhdx.create(dst, len(data), block_size=1 * MiB).close()
    with Server(dst, "--writable") as srv:
        run("nbdcopy", "--flush", str(src), srv.url)
    assert _content(dst) == bytes(data)
    with vhdx.open(dst) as d:
        # nbdcopy skips zero ranges (or writes them as zeroes): no data block where the source is zero.
        data_blocks = {e.virtual_offset // MiB for e in d.extents() if e.state == "data"}
    assert data_blocks <= {1, 2, 9}
