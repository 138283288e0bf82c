"""``vhdx convert``: formats from file names or -f/-O, the VHDX options, --json, --force, streams
on stdin/stdout (in-process and through real pipes), the progress display, and the Windows-made
differencing chain flattened into one image.

Oracles: the source bytes (made here), the library's read of the result, ``qemu-img compare`` and
``check``, the ground-truth chunk digests of the shared chain (expected.json), the documented exit
statuses (vhdx_cli.main) and the file's own digest for "untouched".
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from cli_support import ZERO_MIB_SHA256, chunk_digests
from click.testing import CliRunner, Result
from helpers import file_digest, require_tool, run

import vhdx
from vhdx.ops.progress import Progress
from vhdx_cli.main import cli
from vhdx_cli.progress import ProgressBar

KiB, MiB = 1 << 10, 1 << 20
SIZE = 12 * MiB


@pytest.fixture()
def cli_run() -> Callable[..., Result]:
    """``vhdx ARGS...`` in-process, with optional bytes on stdin."""
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        runner = CliRunner()

    def invoke(*args: object, input: bytes | None = None) -> Result:
        return runner.invoke(cli, [str(a) for a in args], input=input, prog_name="vhdx", catch_exceptions=False)

    return invoke


@pytest.fixture()
def source(tmp_path: Path) -> tuple[Path, bytes]:
    """A sparse raw image: data in blocks 0, 3 and 7-8 (1 MiB blocks), stored zeros in block 5."""
    rng = np.random.default_rng(5)
    content = bytearray(SIZE)
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for offset, data in ((0, rng.bytes(64 * KiB)), (3 * MiB + 512, rng.bytes(4096)), (5 * MiB, bytes(MiB)),
                             (7 * MiB + 100, rng.bytes(MiB + 50))):
            f.seek(offset)
            f.write(data)
            content[offset : offset + len(data)] = data
    return path, bytes(content)


def qemu_compare(a: Path, fmt_a: str, b: Path, fmt_b: str) -> None:
    require_tool("qemu-img")
    got = run("qemu-img", "compare", "-f", fmt_a, "-F", fmt_b, str(a), str(b), check=False)
    assert got.returncode == 0, got.stdout + got.stderr


def test_raw_to_vhdx_by_extension(cli_run: Callable[..., Result], source: tuple[Path, bytes], tmp_path: Path) -> None:
    src, content = source
    dst = tmp_path / "disk.vhdx"
    result = cli_run("convert", src, dst, "--block-size", "1M")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""  # no progress bar: stderr is not a terminal
    assert result.stdout.startswith(f"Converted '{src}' (raw) to '{dst}' (vhdx, dynamic, 1 MiB blocks)")
    with vhdx.open(dst) as disk:
        assert disk.read() == content
        assert disk.info().allocated_blocks == 3 + 1  # blocks 0, 3, 7, 8; block 5 holds only zeros
    qemu_compare(src, "raw", dst, "vhdx")
    require_tool("qemu-img")
    assert run("qemu-img", "check", str(dst), check=False).returncode == 0


def test_json_document(cli_run: Callable[..., Result], source: tuple[Path, bytes], tmp_path: Path) -> None:
    src, content = source
    dst = tmp_path / "disk.VHDX"  # the extension matches in any case
    result = cli_run("convert", src, dst, "--json", "--type", "fixed", "--block-size", "2M",
                     "--logical-sector-size", "4096", "--physical-sector-size", "512")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source"] == str(src) and doc["destination"] == str(dst)
    assert (doc["source-format"], doc["destination-format"], doc["disk-type"]) == ("raw", "vhdx", "fixed")
    assert (doc["block-size"], doc["logical-sector-size"], doc["physical-sector-size"]) == (2 * MiB, 4096, 512)
    assert doc["virtual-size"] == SIZE and doc["blocks-allocated"] == SIZE // (2 * MiB)
    assert doc["file-size-after"] == os.path.getsize(dst) and doc["file-size-before"] == SIZE
    assert 0 < doc["bytes-written"] <= doc["bytes-read"] <= SIZE
    assert set(doc) >= {"bytes-read", "bytes-written", "blocks-allocated", "file-size-before", "file-size-after",
                        "seconds", "actual-size-after", "source-layers"}
    with vhdx.open(dst) as disk:
        assert (disk.disk_type, disk.logical_sector_size, disk.physical_sector_size) == ("fixed", 4096, 512)
        assert disk.read() == content


def test_vhdx_to_raw_and_output_format_flag(cli_run: Callable[..., Result], source: tuple[Path, bytes],
                                            tmp_path: Path) -> None:
    src, content = source
    image = tmp_path / "a.vhdx"
    assert cli_run("convert", src, image, "-q").exit_code == 0
    out = tmp_path / "b.raw"
    result = cli_run("convert", image, out, "-q")
    assert result.exit_code == 0 and result.stdout == ""
    assert out.read_bytes() == content
    # A name that says VHDX, written raw because -O says so; and read back with -f raw.
    odd = tmp_path / "raw-inside.vhdx"
    assert cli_run("convert", image, odd, "-O", "raw", "-q").exit_code == 0
    assert odd.read_bytes() == content
    back = tmp_path / "back.img"
    assert cli_run("convert", odd, back, "-f", "raw", "-q").exit_code == 0
    assert back.read_bytes() == content


def test_misnamed_vhdx_read_as_raw_warns(cli_run: Callable[..., Result], source: tuple[Path, bytes],
                                         tmp_path: Path) -> None:
    src, content = source
    image = tmp_path / "disk.bin"
    assert cli_run("convert", src, image, "-O", "vhdx", "-q").exit_code == 0
    result = cli_run("convert", image, tmp_path / "copy.bin", "-q")
    assert result.exit_code == 0
    assert "looks like a VHDX image" in result.stderr and "-f vhdx" in result.stderr
    result = cli_run("convert", image, tmp_path / "disk2.raw", "-f", "vhdx", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    assert (tmp_path / "disk2.raw").read_bytes() == content


def test_existing_destination_needs_force(cli_run: Callable[..., Result], source: tuple[Path, bytes],
                                          tmp_path: Path) -> None:
    src, content = source
    dst = tmp_path / "x.vhdx"
    dst.write_bytes(b"keep me")
    before = file_digest(dst)
    result = cli_run("convert", src, dst)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"vhdx: {dst}: file exists (use --force to replace it)"
    assert file_digest(dst) == before
    assert cli_run("convert", src, dst, "--force", "-q").exit_code == 0
    with vhdx.open(dst) as disk:
        assert disk.read() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img", "x.vhdx"]


@pytest.mark.parametrize("args,message", [
    (["--type", "fixed"], "--type applies to VHDX output only"),
    (["--block-size", "1M", "--logical-sector-size", "512"], "--block-size, --logical-sector-size apply"),
    (["--preallocate"], "--preallocate applies"),
])
def test_vhdx_options_with_raw_output(cli_run: Callable[..., Result], source: tuple[Path, bytes], tmp_path: Path,
                                      args: list[str], message: str) -> None:
    src, _ = source
    result = cli_run("convert", src, tmp_path / "out.raw", *args)
    assert result.exit_code == 1
    assert message in result.stderr
    assert not (tmp_path / "out.raw").exists()


@pytest.mark.parametrize("args,message", [
    (["--block-size", "3M"], "block size"),
    (["--preallocate"], "fixed"),
    (["--size", "1M"], "smaller than the source"),
])
def test_invalid_values_are_one_line_errors(cli_run: Callable[..., Result], source: tuple[Path, bytes],
                                            tmp_path: Path, args: list[str], message: str) -> None:
    src, _ = source
    result = cli_run("convert", src, tmp_path / "out.vhdx", *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("vhdx: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img"]


def test_stdin_to_vhdx(cli_run: Callable[..., Result], source: tuple[Path, bytes], tmp_path: Path) -> None:
    _, content = source
    for args in ([], ["--size", str(SIZE)]):
        dst = tmp_path / f"in{len(args)}.vhdx"
        result = cli_run("convert", "-", dst, "--block-size", "1M", "--json", *args, input=content)
        assert result.exit_code == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["source"] == "-" and doc["file-size-before"] is None
        with vhdx.open(dst) as disk:
            assert disk.size == SIZE and disk.read() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img", "in0.vhdx", "in2.vhdx"]


def test_stdin_longer_than_size(cli_run: Callable[..., Result], source: tuple[Path, bytes], tmp_path: Path) -> None:
    _, content = source
    result = cli_run("convert", "-", tmp_path / "in.vhdx", "--size", "4M", input=content)
    assert result.exit_code == 1 and "longer than the size" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.img"]


def test_vhdx_to_stdout(cli_run: Callable[..., Result], source: tuple[Path, bytes], tmp_path: Path) -> None:
    src, content = source
    image = tmp_path / "a.vhdx"
    assert cli_run("convert", src, image, "-q").exit_code == 0
    result = cli_run("convert", image, "-")
    assert result.exit_code == 0, result.stderr
    assert result.stdout_bytes == content  # every byte, holes included, and no summary mixed in


@pytest.mark.parametrize("args,message", [
    (["-", "out.vhdx", "-f", "vhdx"], "stdin can only be read as raw"),
    (["disk.img", "-", "-O", "vhdx"], "only raw bytes can be written to stdout"),
    (["disk.img", "-", "--json"], "--json cannot be used"),
])
def test_stream_misuse(cli_run: Callable[..., Result], source: tuple[Path, bytes], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = cli_run("convert", *args)
    assert result.exit_code == 1 and message in result.stderr


def test_progress_flag(cli_run: Callable[..., Result], source: tuple[Path, bytes], tmp_path: Path) -> None:
    src, _ = source
    result = cli_run("convert", src, tmp_path / "p.vhdx", "--progress", "-q")
    assert result.exit_code == 0
    lines = result.stderr.splitlines()
    assert lines and lines[-1].startswith("converting: 100.0% [")
    assert f"{SIZE >> 20} MiB / {SIZE >> 20} MiB" in lines[-1]
    result = cli_run("convert", src, tmp_path / "q.vhdx", "--no-progress", "-q")
    assert result.exit_code == 0 and result.stderr == ""


def test_progress_bar_rendering() -> None:
    out = io.StringIO()
    bar = ProgressBar("converting", stream=out, tty=True)
    bar(Progress("convert", 0, 4 * MiB))
    bar(Progress("convert", 4 * MiB, 4 * MiB))  # the final report is always drawn
    bar.close()
    text = out.getvalue()
    assert text.startswith("\rconverting:   0.0% [" + "-" * 28 + "]")
    assert "\rconverting: 100.0% [" + "#" * 28 + "] 4 MiB / 4 MiB" in text and text.endswith("\n")
    assert bar.render(Progress("convert", 3 * MiB, None), 1.0) == "converting: 3 MiB 3 MiB/s"
    assert bar.render(Progress("check", 5, 10, unit="blocks"), 0.0).startswith("converting:  50.0% [")
    log = io.StringIO()
    plain = ProgressBar("x", stream=log, tty=False)
    plain(Progress("convert", 0, 100))
    plain(Progress("convert", 100, 100))
    plain.close()
    assert "\r" not in log.getvalue() and log.getvalue().count("\n") == 2


def test_flatten_windows_chain(cli_run: Callable[..., Result], chain_layout, tmp_path: Path) -> None:
    """The Windows-made child over its parent, flattened: every MiB matches the ground truth."""
    flat = tmp_path / "flat.vhdx"
    result = cli_run("convert", chain_layout.child, flat, "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["source-layers"] == 2
    chunk, digests = chunk_digests(chain_layout.child_entry)
    with vhdx.open(flat) as disk:
        assert disk.disk_type == "dynamic" and disk.parent is None
        assert disk.size == chain_layout.child_entry.virtual_size
        seen: set[int] = set()
        for e in disk.extents():
            if e.state != "data":
                continue
            for i in range(e.virtual_offset // chunk, (e.end - 1) // chunk + 1):
                if i not in seen:
                    seen.add(i)
                    got = hashlib.sha256(disk.pread(i * chunk, chunk)).hexdigest()
                    assert got == digests.get(i, ZERO_MIB_SHA256), i
    assert set(digests) <= seen  # no chunk that holds data was left out
    require_tool("qemu-img")
    assert run("qemu-img", "check", str(flat), check=False).returncode == 0


def test_missing_parent_leaves_nothing(cli_run: Callable[..., Result], lonely_child: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "flat.raw"
    out.parent.mkdir()
    result = cli_run("convert", lonely_child, out)
    assert result.exit_code == 1 and result.stderr.startswith("vhdx: ")
    assert list(out.parent.iterdir()) == []


@pytest.fixture(scope="module")
def script() -> str:
    beside = Path(sys.executable).with_name("vhdx")
    if beside.is_file():
        return str(beside)
    require_tool("vhdx")
    import shutil

    found = shutil.which("vhdx")
    assert found is not None
    return found


def test_real_pipes(script: str, cli_run: Callable[..., Result], source: tuple[Path, bytes], tmp_path: Path) -> None:
    """vhdx convert a.vhdx - | vhdx convert - b.vhdx, as processes joined by an OS pipe."""
    src, content = source
    a, b = tmp_path / "a.vhdx", tmp_path / "b.vhdx"
    assert cli_run("convert", "-q", src, a).exit_code == 0
    producer = subprocess.Popen([script, "convert", str(a), "-"], stdout=subprocess.PIPE)
    consumer = subprocess.run([script, "convert", "-q", "-", str(b)], stdin=producer.stdout, capture_output=True,
                              timeout=60)
    assert producer.stdout is not None
    producer.stdout.close()
    assert producer.wait(timeout=60) == 0
    assert consumer.returncode == 0, consumer.stderr
    with vhdx.open(b) as disk:
        assert disk.read() == content
    qemu_compare(a, "vhdx", b, "vhdx")


def test_fifo_source_is_read_as_a_stream(cli_run: Callable[..., Result], source: tuple[Path, bytes],
                                         tmp_path: Path) -> None:
    """A FIFO given by name (bash's ``<(...)``) is read once, in order; as a destination it is
    refused (a file cannot be renamed over it), with a hint to use '-'."""
    _, content = source
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result = cli_run("convert", tmp_path / "disk.img", fifo)
    assert result.exit_code == 1 and "not a regular file" in result.stderr
    result = cli_run("convert", tmp_path / "disk.img", fifo, "--force")
    assert result.exit_code == 1 and "'-'" in result.stderr

    def feed() -> None:
        with open(fifo, "wb") as f:
            for i in range(0, len(content), 100_000):
                f.write(content[i : i + 100_000])

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        out = tmp_path / "c.raw"
        result = cli_run("convert", "-q", fifo, out)
    finally:
        feeder.join(timeout=60)
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes() == content
