"""Interop of what we write, both ways: images we create and write are checked and read by
qemu-img / qemu-io, libvhdi (pyvhdi) and dissect.hypervisor, and images we created and QEMU then
wrote into are read back by us.

Oracles: a bytearray model of every write (ours and QEMU's), and the independent readers
themselves (``qemu-img check`` finds no errors, corruptions or leaks; ``qemu-img convert -O raw``,
``qemu-img compare``, ``qemu-io read -P``, pyvhdi and dissect return the model's bytes).

Known limits of the other readers, and how the tests stay inside them (VHDX-FORMAT.md 14):
  * QEMU opens neither differencing images nor 4096-byte logical sectors: those go to libvhdi
    and dissect only.
  * libvhdi reads a differencing child's ZERO and UNMAPPED blocks from the parent (the spec says
    zeros), so chains compared with libvhdi get no whole-block write_zeroes/discard in children.
  * dissect drops sectors of a partially present block when a run of the sector bitmap starts in
    the middle of a bitmap byte, so its chains get writes aligned to 8 logical sectors (4 KiB with
    512-byte sectors, 32 KiB with 4096-byte ones): every run then starts on a byte boundary.
    libvhdi gets unaligned writes.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import pytest
from helpers import copy_to, image_of, load_expected, require_module, require_tool, run

import vhdx

pytestmark = pytest.mark.interop

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
QEMU_TIMEOUT = 60  # seconds; every QEMU run here takes well under one (see the log-scan note below)
LOG_SCAN_TIMEOUT = 8  # the runs that may hit QEMU's endless log scan


# --- tool wrappers ----------------------------------------------------------------------------------


def qemu_check(path: Path) -> None:
    """``qemu-img check``: exit 0, and no errors, corruptions or leaks in its JSON report."""
    require_tool("qemu-img")
    result = run("qemu-img", "check", "--output=json", str(path), check=False, timeout=QEMU_TIMEOUT)
    assert result.returncode == 0, (result.stdout, result.stderr)
    report = json.loads(result.stdout)
    assert report["check-errors"] == 0, report
    for key in ("corruptions", "leaks", "corruptions-fixed", "leaks-fixed"):
        assert report.get(key, 0) == 0, report


def qemu_info(path: Path) -> dict:
    require_tool("qemu-img")
    return json.loads(run("qemu-img", "info", "--output=json", str(path), timeout=QEMU_TIMEOUT).stdout)  # type: ignore[no-any-return]


def qemu_raw(path: Path, tmp: Path) -> bytes:
    """The virtual disk as ``qemu-img convert -O raw`` sees it."""
    require_tool("qemu-img")
    out = tmp / (path.name + ".raw")
    run("qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(path), str(out), timeout=QEMU_TIMEOUT)
    data = out.read_bytes()
    out.unlink()
    return data


def qemu_compare(path: Path, model_writes: list[tuple[int, bytes]], size: int, tmp: Path) -> None:
    """``qemu-img compare`` of the image with a sparse raw file holding the model (large disks)."""
    require_tool("qemu-img")
    raw = tmp / "model.raw"
    with open(raw, "wb") as f:
        f.truncate(size)
        for offset, data in model_writes:
            f.seek(offset)
            f.write(data)
    result = run("qemu-img", "compare", "-f", "raw", "-F", "vhdx", str(raw), str(path), check=False,
                 timeout=QEMU_TIMEOUT)
    raw.unlink()
    assert result.returncode == 0, (result.stdout, result.stderr)


def qemu_io(path: Path, *commands: str, read_only: bool = False) -> str:
    require_tool("qemu-io")
    args = ["qemu-io", "-f", "vhdx"] + (["-r"] if read_only else [])
    for c in commands:
        args += ["-c", c]
    result = run(*args, str(path), check=False, timeout=QEMU_TIMEOUT)
    assert result.returncode == 0, (result.stdout, result.stderr)
    # qemu-io reports a failed command on stdout and still exits 0.
    assert "fail" not in result.stdout.lower() and "error" not in result.stdout.lower(), result.stdout
    return result.stdout


def read_libvhdi(files: list[Path], size: int) -> bytes:
    """The top of the chain read through pyvhdi, each layer given the one below (bottom up)."""
    pyvhdi = require_module("pyvhdi")
    handles = []
    try:
        for path in files:
            f = pyvhdi.file()
            f.open(str(path))
            if handles:
                f.set_parent(handles[-1])
            handles.append(f)
        top = handles[-1]
        assert top.get_media_size() == size
        out = bytearray()
        step = 8 * MiB
        for offset in range(0, size, step):
            out += top.read_buffer_at_offset(min(step, size - offset), offset)
        return bytes(out)
    finally:
        for f in reversed(handles):
            f.close()


def read_dissect(top: Path, size: int, ranges: list[tuple[int, int]] | None = None) -> bytes | list[bytes]:
    """The disk through dissect.hypervisor (which finds the parents through the locators)."""
    require_module("dissect.hypervisor")
    from dissect.hypervisor.disk.vhdx import VHDX

    with open(top, "rb") as fh:
        disk = VHDX(fh)
        assert disk.size == size
        if ranges is not None:
            out = []
            for offset, length in ranges:
                disk.seek(offset)
                out.append(disk.read(length))
            return out
        disk.seek(0)
        return disk.read(size)  # type: ignore[no-any-return]


# --- workloads ----------------------------------------------------------------------------------------


def random_workload(disk: vhdx.VirtualDisk, model: bytearray, rng: random.Random, steps: int, *,
                    whole_block_trims: bool = True, align: int = 1) -> None:
    """Writes (of any alignment, or multiples of ``align``), write_zeroes and discards, with
    flushes, applied to ``disk`` and to ``model``. Partial discards keep the data (documented)."""
    size, bs = disk.size, disk.block_size
    fixed = disk.disk_type == "fixed"
    for _ in range(steps):
        r = rng.random()
        if r < 0.6 or not whole_block_trims:
            length = rng.randrange(1, min(size, 3 * bs // 2, 3 * MiB) + 1)
            offset = rng.randrange(0, size - length + 1)
            if align > 1:
                offset -= offset % align
                length = max(align, length - length % align)
                length = min(length, size - offset)
            if rng.random() < 0.4 and align == 1:  # across a block boundary
                boundary = rng.randrange(1, -(-size // bs)) * bs if size > bs else 0
                offset = max(0, boundary - rng.randrange(1, 5000))
                length = min(size - offset, rng.randrange(1, min(2 * bs, 3 * MiB)))
            data = rng.randbytes(length)
            disk.pwrite(offset, data)
            model[offset : offset + length] = data
        elif r < 0.8:
            block = rng.randrange(0, -(-size // bs))
            start = block * bs + (rng.randrange(0, 4) * 512 if rng.random() < 0.5 else 0)
            length = min(size - start, rng.choice([bs, 2 * bs, 4096, 1000]))
            disk.write_zeroes(start, length)
            model[start : start + length] = bytes(length)
        else:
            block = rng.randrange(0, -(-size // bs))
            start = block * bs
            length = min(size - start, bs)
            disk.discard(start, length)
            if not fixed:
                model[start : start + length] = bytes(length)  # a whole block: UNMAPPED reads zeros
        if rng.random() < 0.25:
            disk.flush()


# --- qemu-img check / convert on images we write ---------------------------------------------------------

QEMU_CASES = [
    ("dynamic", 64 * MiB, MiB),
    ("dynamic", 40 * MiB + 512, 2 * MiB),
    ("dynamic", 64 * MiB + 4096, 32 * MiB),
    ("dynamic", 20 * MiB + 1536, 256 * MiB),
    ("fixed", 32 * MiB, MiB),
    ("fixed", 10 * MiB + 512, 4 * MiB),
    ("fixed", 40 * MiB + 512, 32 * MiB),
    ("fixed", 3 * MiB, 8 * MiB),
]


@pytest.mark.parametrize(("disk_type", "size", "block_size"), QEMU_CASES,
                         ids=[f"{t}-{s}-bs{b >> 20}M" for t, s, b in QEMU_CASES])
def test_images_we_write_pass_qemu_img_check_and_convert(tmp_path: Path, disk_type: str, size: int,
                                                        block_size: int) -> None:
    path = tmp_path / "ours.vhdx"
    model = bytearray(size)
    rng = random.Random(size ^ block_size)
    with vhdx.create(path, size, disk_type=disk_type, block_size=block_size) as disk:
        random_workload(disk, model, rng, 20)
    with vhdx.open(path, "r+b") as disk:  # a second session appends to the first
        random_workload(disk, model, rng, 12)
    qemu_check(path)
    info = qemu_info(path)
    assert (info["virtual-size"], info["cluster-size"], info["format"]) == (size, block_size, "vhdx")
    assert qemu_raw(path, tmp_path) == model
    with vhdx.open(path) as disk:
        assert disk.read() == model


# --- qemu-io writes into images we created -------------------------------------------------------------


@pytest.mark.parametrize(("disk_type", "block_size"), [("dynamic", MiB), ("dynamic", 8 * MiB), ("dynamic", 32 * MiB),
                                                       ("fixed", 4 * MiB)])
def test_qemu_io_writes_into_our_images_and_reads_ours(tmp_path: Path, disk_type: str, block_size: int) -> None:
    size = 24 * MiB + 512
    path = tmp_path / "shared.vhdx"
    model = bytearray(size)
    with vhdx.create(path, size, disk_type=disk_type, block_size=block_size) as disk:
        disk.pwrite(MiB - 100, b"\x11" * 300)  # we allocate first
        model[MiB - 100 : MiB + 200] = b"\x11" * 300
    # QEMU writes patterns: aligned, unaligned, across a block boundary, the last sector.
    qemu_writes = [(0xA1, 0, 4096), (0xB2, 1000, 3000), (0xC3, 9 * MiB - 512, 2 * MiB + 1024),
                   (0xD4, 16 * MiB + 5, 70000), (0xE5, size - 512, 512)]
    qemu_io(path, *(f"write -P 0x{p:x} {o} {n}" for p, o, n in qemu_writes))
    for p, o, n in qemu_writes:
        model[o : o + n] = bytes([p]) * n
    qemu_check(path)
    with vhdx.open(path) as disk:
        assert disk.read() == model
    # We write after QEMU: new blocks must not collide with the ones QEMU placed.
    our_writes = [(0x5A, 5 * MiB + 3, 4 * MiB), (0x6B, 20 * MiB, MiB), (0x7C, 2000, 100)]
    with vhdx.open(path, "r+b") as disk:
        for p, o, n in our_writes:
            disk.pwrite(o, bytes([p]) * n)
            model[o : o + n] = bytes([p]) * n
    qemu_check(path)
    qemu_io(path, *(f"read -P 0x{p:x} {o} {n}" for p, o, n in our_writes), read_only=True)
    assert qemu_raw(path, tmp_path) == model


# --- differencing chains, through libvhdi and dissect ----------------------------------------------------


def _build_chain(tmp: Path, sector: int, depth: int, *, align: int, trims: bool) -> tuple[list[Path], bytearray]:
    """A dynamic base and ``depth - 1`` children stacked on it, each written (and reopened once)."""
    size = 12 * MiB + 8 * sector
    rng = random.Random(sector * 31 + depth + align)
    files = [tmp / "base.vhdx"]
    model = bytearray(size)
    with vhdx.create(files[0], size, block_size=4 * MiB, logical_sector_size=sector) as base:
        random_workload(base, model, rng, 10, whole_block_trims=trims, align=align)
    block_sizes = [MiB, 2 * MiB, 8 * MiB, MiB]  # children both smaller and larger than their parents
    for level in range(1, depth):
        child = tmp / f"child{level}.avhdx"
        with vhdx.create(child, parent=files[-1], block_size=block_sizes[(level - 1) % len(block_sizes)]) as disk:
            random_workload(disk, model, rng, 8, whole_block_trims=trims, align=align)
        with vhdx.open(child, "r+b") as disk:
            random_workload(disk, model, rng, 6, whole_block_trims=trims, align=align)
        files.append(child)
    with vhdx.open(files[-1]) as top:
        assert len(top.chain) == depth
        assert top.read() == model
    return files, model


@pytest.mark.parametrize("sector", [512, 4096])
def test_chain_reads_identically_through_libvhdi(tmp_path: Path, sector: int) -> None:
    files, model = _build_chain(tmp_path, sector, 4, align=1, trims=False)
    assert read_libvhdi(files, len(model)) == model


@pytest.mark.parametrize("sector", [512, 4096])
def test_chain_reads_identically_through_dissect(tmp_path: Path, sector: int) -> None:
    # Writes aligned to 8 sectors: see the module docstring (dissect's mid-byte bitmap runs).
    files, model = _build_chain(tmp_path, sector, 4, align=8 * sector, trims=True)
    assert read_dissect(files[-1], len(model)) == model


# --- a 64 TiB disk --------------------------------------------------------------------------------------


def test_64TiB_dynamic_image_with_writes_at_both_ends(tmp_path: Path) -> None:
    size = 64 * TiB
    path = tmp_path / "huge.vhdx"
    writes = [(0, b"\xa1" * 512), (size - 512, b"\xb2" * 512), (size - 4096 - 700, b"\xc3" * 700),
              (4 * GiB - 100, b"\xd4" * 200)]  # across the first chunk boundary (4 GiB)
    with vhdx.create(path, size) as disk:
        for offset, data in writes:
            disk.pwrite(offset, data)
    qemu_check(path)
    assert qemu_info(path)["virtual-size"] == size
    qemu_io(path, "read -P 0xa1 0 512", f"read -P 0xb2 {size - 512} 512", f"read -P 0xc3 {size - 4796} 700",
            f"read -P 0xd4 {4 * GiB - 100} 200", f"read -P 0 512 {MiB}", f"read -P 0 {size - 4096} 3584",
            read_only=True)
    pyvhdi = require_module("pyvhdi")
    f = pyvhdi.file()
    f.open(str(path))
    try:
        assert f.get_media_size() == size
        for offset, data in writes:
            assert f.read_buffer_at_offset(len(data), offset) == data
        assert f.read_buffer_at_offset(4096, 512) == bytes(4096)
        assert f.read_buffer_at_offset(3584, size - 4096) == bytes(3584)
    finally:
        f.close()
    got = read_dissect(path, size, [(o, len(d)) for o, d in writes])
    assert got == [d for _, d in writes]
    with vhdx.open(path) as disk:
        for offset, data in writes:
            assert disk.pread(offset, len(data)) == data


# --- 4096-byte logical sectors: libvhdi and dissect (QEMU cannot open them) --------------------------------


@pytest.mark.parametrize(("disk_type", "block_size"), [("dynamic", MiB), ("dynamic", 32 * MiB), ("fixed", 2 * MiB)])
def test_4096_byte_sector_image_through_libvhdi_and_dissect(tmp_path: Path, disk_type: str, block_size: int) -> None:
    size = 20 * MiB + 3 * 4096
    path = tmp_path / "native4k.vhdx"
    model = bytearray(size)
    rng = random.Random(block_size)
    with vhdx.create(path, size, disk_type=disk_type, block_size=block_size, logical_sector_size=4096,
                     physical_sector_size=4096) as disk:
        random_workload(disk, model, rng, 25)
    assert read_libvhdi([path], size) == model
    assert read_dissect(path, size) == model


# --- our log, replayed by QEMU --------------------------------------------------------------------------

# Each flush below changes one BAT sector (2-sector log entries) or two (3-sector entries). In a
# 256-sector ring, 3-sector entries reused under one LogGuid would leave exactly one stale sector
# between the newest entry and the oldest one carrying that GUID, a valid log (MS-VHDX 2.3.2) on
# which QEMU 7.2's vhdx_log_search never terminates (it follows the chain round the ring, steps over
# the stale sector and lands where it started). The journal therefore never wraps an entry chain
# round the ring: it rotates the LogGuid and restarts at offset 0 instead. Both shapes must replay
# in QEMU; the timeout turns a regression into a failure instead of a hang.
ENTRY_SHAPES = [
    pytest.param(1, id="2-sector-entries"),
    pytest.param(2, id="3-sector-entries"),
]


@pytest.mark.parametrize("bat_sectors", ENTRY_SHAPES)
def test_qemu_replays_a_log_we_left_behind(tmp_path: Path, bat_sectors: int) -> None:
    """Copy the file between a flush and the close (as after a crash): the log holds entries that
    went round the 1 MiB ring; ``qemu-img check -r all`` replays them, and QEMU then reads the model."""
    require_tool("qemu-img", "qemu-io")
    size = GiB  # 1 MiB blocks: BAT sector 0 covers blocks 0-511, sector 1 blocks 512-1023
    path = tmp_path / "live.vhdx"
    writes: list[tuple[int, bytes]] = []
    with vhdx.create(path, size, block_size=MiB, log_size=MiB) as disk:
        for k in range(12):
            data = random.Random(k).randbytes(3000)
            disk.pwrite(k * 7 * MiB + 123, data)
            writes.append((k * 7 * MiB + 123, data))
        disk.flush()
        for k in range(150):  # BAT-only changes: whole blocks flipped between ZERO and UNMAPPED
            blocks = [100 + k % 40, 600 + k % 40][:bat_sectors]
            for n, block in enumerate(blocks):
                flip = ((k // 40) + n) % 2
                (disk.discard if flip else disk.write_zeroes)(block * MiB, MiB)
            disk.flush()
        assert disk._engine.journal.stats.log_bytes > MiB  # the ring has been reused
        (tmp_path / "crash").mkdir()
        snapshot = copy_to(path, tmp_path / "crash", "snapshot.vhdx")
    # Read-only, QEMU refuses a file whose log needs replaying.
    refused = run("qemu-io", "-r", "-f", "vhdx", "-c", "read 0 512", str(snapshot), check=False,
                  timeout=LOG_SCAN_TIMEOUT)
    assert refused.returncode != 0 or "fail" in refused.stdout.lower()
    result = run("qemu-img", "check", "-r", "all", str(snapshot), check=False,
                  timeout=LOG_SCAN_TIMEOUT)
    assert result.returncode == 0, (result.stdout, result.stderr)
    qemu_check(snapshot)
    qemu_compare(snapshot, writes, size, tmp_path)
    qemu_compare(path, writes, size, tmp_path)


# --- the shared dirty-log images: our replay against QEMU's ----------------------------------------------


def test_our_replay_of_dirty_fixtures_equals_qemus(tmp_path: Path) -> None:
    """The shared images with a pending log (512-byte sectors, so QEMU opens them): one copy
    replayed by our writable open, one by ``qemu-img check -r all``; QEMU finds ours clean and
    ``qemu-img compare`` finds the two virtual disks identical."""
    require_tool("qemu-img")
    entries = [e for e in load_expected() if e.raw.get("log_needs_replay") and e.logical_sector_size == 512]
    assert entries
    for entry in entries:
        folder = tmp_path / entry.id.replace("/", "_")
        (folder / "ours").mkdir(parents=True)
        (folder / "theirs").mkdir()
        ours = copy_to(image_of(entry), folder / "ours")
        theirs = copy_to(image_of(entry), folder / "theirs")
        vhdx.open(ours, "r+b").close()
        qemu_check(ours)
        run("qemu-img", "check", "-r", "all", str(theirs), check=False, timeout=QEMU_TIMEOUT)
        qemu_check(theirs)
        result = run("qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", str(ours), str(theirs), check=False,
                     timeout=QEMU_TIMEOUT)
        assert result.returncode == 0, (entry.id, result.stdout, result.stderr)
