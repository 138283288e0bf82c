"""``vhdx batch``: a fleet of small images (some damaged, one missing) through a local process pool
and a real ``dask.distributed.LocalCluster``; one JSON line per image, failures recorded in one line
and never stopping the rest, resuming after lost lines and after a kill, and split hashing checked
against the hash tree computed here from the documented definition.

Ground truth: vhdx.open + hashlib for content digests, ``vhdx.ops.check`` run directly for checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import vhdx
from craft import flip_byte, truncated_copy
from helpers import require_module, sha256_of_disk
from vhdx.constants import HEADER_1_OFFSET, HEADER_2_OFFSET
from vhdx.ops import check
from vhdx.ops.batch import Job, hash_task, run_batch, tree_root
from vhdx_cli.main import cli

MiB = 1 << 20
GOOD = 30


def invoke(*args: object) -> Result:
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]  # click < 8.2
    except TypeError:
        runner = CliRunner()
    return runner.invoke(cli, [str(a) for a in args], prog_name="vhdx", catch_exceptions=False)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_image(path: Path) -> dict[str, dict[str, Any]]:
    recs = records(path)
    counts = Counter(r["image"] for r in recs)
    assert all(n == 1 for n in counts.values()), [i for i, n in counts.items() if n > 1]
    return {r["image"]: r for r in recs}


class Fleet:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        rng = random.Random(7)
        self.good: list[str] = []
        for i in range(GOOD):
            path = folder / f"img{i:02d}.vhdx"
            with vhdx.create(path, 4 * MiB, block_size=1 * MiB) as disk:
                for _ in range(i % 4):  # some images stay empty
                    disk.pwrite(rng.randrange(0, disk.size - 65536) // 512 * 512, rng.randbytes(rng.choice([512, 65536])))
            self.good.append(str(path))
        junk = folder / "bad-junk.vhdx"
        junk.write_bytes(rng.randbytes(300_000))
        truncated = truncated_copy(Path(self.good[3]), folder / "bad-truncated.vhdx", 300 * 1024)
        headers = folder / "bad-headers.vhdx"
        shutil.copyfile(self.good[5], headers)
        flip_byte(headers, HEADER_1_OFFSET + 100)
        flip_byte(headers, HEADER_2_OFFSET + 100)
        self.bad = [str(junk), str(truncated), str(headers)]
        self.missing = str(folder / "missing.vhdx")
        self.digests = {}
        for name in self.good:
            with vhdx.open(name) as disk:
                self.digests[name] = sha256_of_disk(disk)

    @property
    def inputs(self) -> list[str]:
        return [str(self.folder / "*.vhdx"), self.missing]

    @property
    def images(self) -> set[str]:
        return set(self.good) | set(self.bad) | {self.missing}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return Fleet(tmp_path_factory.mktemp("fleet"))


def assert_hash_results(out: Path, fleet: Fleet) -> None:
    recs = by_image(out)
    assert set(recs) == fleet.images
    for name in fleet.good:
        r = recs[name]
        assert r["ok"] is True and r["error"] is None and r["action"] == "hash"
        assert r["result"]["digests"]["sha256"] == fleet.digests[name]
    for name in [*fleet.bad, fleet.missing]:
        r = recs[name]
        assert r["ok"] is False and r["error"] and "\n" not in r["error"]
    assert "No such file or directory" in recs[fleet.missing]["error"]


def test_local_pool_hashes_every_image_once_and_records_failures(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "hash.jsonl"
    result = invoke("batch", "hash", *fleet.inputs, "--output", out, "--workers", "2")
    assert result.exit_code == 2, (result.stdout, result.stderr)  # some images failed
    assert result.stderr.strip().count("\n") == 0 and "4 of 34 images failed" in result.stderr
    assert "30 ok, 4 failed" in result.stdout
    assert_hash_results(out, fleet)


def test_resume_after_lost_and_partial_lines(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "hash.jsonl"
    job = Job("hash")
    first = run_batch(job, fleet.inputs, out, workers=0)
    assert (first.succeeded, first.failed, first.skipped) == (30, 4, 0)
    lines = out.read_text().splitlines(keepends=True)
    dropped = [json.loads(line)["image"] for line in lines[::7] if json.loads(line)["ok"]]
    kept = [line for line in lines if json.loads(line)["image"] not in dropped]
    out.write_text("".join(kept) + kept[0][: len(kept[0]) // 2])  # and a half-written line, as a kill leaves
    second = run_batch(job, fleet.inputs, out, workers=2)
    # Only the lost images and the failures were run again.
    assert second.skipped == 30 - len(dropped)
    assert second.succeeded == len(dropped) and second.failed == 4
    assert_hash_results(out, fleet)
    third = run_batch(job, fleet.inputs, out, workers=0)
    assert (third.succeeded, third.skipped, third.failed) == (0, 30, 4)
    assert_hash_results(out, fleet)


def test_resume_after_a_kill(tmp_path: Path) -> None:
    """A real kill (SIGKILL to the job's process group) midway, then the same command again."""
    images = []
    for i in range(10):  # empty but large enough that hashing takes a moment: the kill lands midway
        path = tmp_path / f"e{i:02d}.vhdx"
        vhdx.create(path, 160 * MiB, block_size=32 * MiB).close()
        images.append(str(path))
    zero = hashlib.sha256(bytes(160 * MiB)).hexdigest()
    out = tmp_path / "kill.jsonl"
    cmd = [sys.executable, "-m", "vhdx_cli.main", "batch", "hash", str(tmp_path / "*.vhdx"), "--output", str(out),
           "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_text().count("\n") >= 3:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the job ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    written = out.read_text().count("\n")
    assert 3 <= written < len(images)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{written} already done" in done.stdout
    recs = by_image(out)
    assert set(recs) == set(images)
    assert all(r["ok"] and r["result"]["digests"]["sha256"] == zero for r in recs.values())


def test_dask_local_cluster_via_scheduler_address(fleet: Fleet, tmp_path: Path) -> None:
    require_module("distributed")
    from dask.distributed import LocalCluster

    big = tmp_path / "big.vhdx"
    rng = random.Random(9)
    with vhdx.create(big, 22 * MiB, block_size=1 * MiB) as disk:
        for _ in range(12):
            disk.pwrite(rng.randrange(0, disk.size - 131072) // 512 * 512, rng.randbytes(131072))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tcp://")
        out = tmp_path / "dask.jsonl"
        result = invoke("batch", "hash", *fleet.inputs, "--output", out, "--scheduler", address)
        assert result.exit_code == 2, (result.stdout, result.stderr)
        assert_hash_results(out, fleet)
        # One large image split across the cluster's workers.
        split_out = tmp_path / "split.jsonl"
        result = invoke("batch", "hash", big, fleet.good[0], "--split-hash", "4M", "--output", split_out,
                        "--scheduler", address, "--json")
        assert result.exit_code == 0, (result.stdout, result.stderr)
        summary = json.loads(result.stdout)
        assert summary["tasks"] == 6 + 2  # the big image's plan + 6 ranges, the small image whole
    recs = by_image(split_out)
    assert_split_record(recs[str(big)], big, 4 * MiB)
    assert_split_record(recs[fleet.good[0]], Path(fleet.good[0]), 4 * MiB)


def assert_split_record(record: dict[str, Any], image: Path, split: int) -> None:
    """The documented tree, computed here: sha256 of each SPLIT-byte range (the last shorter),
    then sha256 over the concatenated 32-byte digests."""
    with vhdx.open(image) as disk:
        data = disk.read()
    ranges = [hashlib.sha256(data[i : i + split]).digest() for i in range(0, len(data), split)]
    assert record["ok"] is True
    result = record["result"]
    assert result["range-size"] == split and result["virtual-size"] == len(data)
    assert result["ranges"] == [d.hex() for d in ranges]
    assert result["sha256-tree"] == hashlib.sha256(b"".join(ranges)).hexdigest()
    if len(data) <= split:  # one range: the plain digest too
        assert result["digests"]["sha256"] == hashlib.sha256(data).hexdigest()
    else:  # the tree root is not the plain sha256, and no plain sha256 is claimed
        assert result["sha256-tree"] != hashlib.sha256(data).hexdigest()
        assert "sha256" not in result["digests"]


def test_split_hashing_in_a_local_pool_equals_the_documented_tree(tmp_path: Path) -> None:
    big = tmp_path / "big.vhdx"
    rng = random.Random(10)
    with vhdx.create(big, 21 * MiB, block_size=2 * MiB) as disk:  # 21 MiB: the last 5 MiB range is short
        for _ in range(10):
            disk.pwrite(rng.randrange(0, disk.size - 100_000), rng.randbytes(100_000))
    out = tmp_path / "split.jsonl"
    result = run_batch(Job("hash", split=4 * MiB), [str(big)], out, workers=2)
    assert (result.succeeded, result.tasks) == (1, 1 + 6)
    record = by_image(out)[str(big)]
    assert_split_record(record, big, 4 * MiB)
    # The same tree from the in-process task function, and from tree_root over the range digests.
    assert hash_task(str(big), split=4 * MiB)["result"]["sha256-tree"] == record["result"]["sha256-tree"]
    assert tree_root(record["result"]["ranges"]) == record["result"]["sha256-tree"]


def test_batch_info_check_convert(fleet: Fleet, tmp_path: Path) -> None:
    info_out = tmp_path / "info.jsonl"
    assert invoke("batch", "info", *fleet.inputs, "-o", info_out, "-w", "0").exit_code == 2
    infos = by_image(info_out)
    for name in fleet.good:
        with vhdx.open(name) as disk:
            expected = disk.info()
        got = infos[name]["result"]
        assert infos[name]["ok"] and got["virtual-size"] == expected.virtual_size
        assert got["allocated-blocks"] == expected.allocated_blocks and got["disk-id"] == expected.disk_id
    assert sorted(n for n, r in infos.items() if not r["ok"]) == sorted([*fleet.bad, fleet.missing])

    check_out = tmp_path / "check.jsonl"
    invoke("batch", "check", *fleet.inputs, "-o", check_out, "-w", "2")
    checks = by_image(check_out)
    assert set(checks) == fleet.images
    for name in [*fleet.good, *fleet.bad]:
        report = check(name)  # ground truth: the check run here, directly
        r = checks[name]
        assert r["ok"] is (not report.check_errors), name
        assert r["result"]["exit-status"] == report.exit_status
        assert r["result"]["corruptions"] == report.corruptions
    assert checks[fleet.missing]["ok"] is False

    # Convert: two inputs with the same file name get distinct outputs.
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = other / "img01.vhdx"
    shutil.copyfile(fleet.good[2], twin)
    dest = tmp_path / "flat"
    conv_out = tmp_path / "convert.jsonl"
    result = invoke("batch", "convert", fleet.good[1], twin, fleet.good[3], fleet.missing, "--dest", dest,
                    "-o", conv_out, "-w", "0", "--type", "fixed")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    convs = by_image(conv_out)
    made = sorted(p.name for p in dest.iterdir())
    assert len(made) == 3 and "img03.vhdx" in made
    for source in (fleet.good[1], str(twin), fleet.good[3]):
        r = convs[source]
        assert r["ok"], r
        with vhdx.open(r["result"]["destination"]) as new, vhdx.open(source) as old:
            assert new.disk_type == "fixed" and sha256_of_disk(new) == sha256_of_disk(old)
    assert convs[fleet.missing]["ok"] is False


def test_output_of_another_job_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    run_batch(Job("hash"), fleet.good[:2], out, workers=0)
    before = out.read_text()
    for args in (["info"], ["hash", "-a", "md5"], ["hash", "--split-hash", "1M"]):
        result = invoke("batch", *args, *fleet.good[:2], "--output", out, "-w", "0")
        assert result.exit_code == 1
        assert result.stderr.startswith("vhdx: ") and result.stderr.count("\n") == 1, result.stderr
        assert "another job" in result.stderr
    assert out.read_text() == before


@pytest.mark.parametrize("args,message", [
    (["convert", "x.vhdx"], "--dest"),
    (["info", "x.vhdx", "--dest", "d"], "apply to 'convert' only"),
    (["check", "x.vhdx", "--split-hash", "4M"], "apply to 'hash' only"),
    (["hash", "x.vhdx", "--split-hash", "1000"], "multiple of 1 MiB"),
    (["hash", "x.vhdx", "--split-hash", "4M", "-a", "md5"], "SHA-256 only"),
])
def test_bad_options_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = invoke("batch", *args, "--output", tmp_path / "o.jsonl")
    assert result.exit_code == 1 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "o.jsonl").exists()


class _FlakyPool:
    """An executor whose tasks for some images are lost with their worker (as when a worker
    process crashes and the pool breaks) a given number of times; the rest run in this process."""

    slots = 4

    def __init__(self, deaths: dict[str, int]) -> None:
        self.deaths = deaths
        self.generation = 1
        self.restarts = 0

    def submit(self, fn: Any, *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        image = args[1]
        if self.deaths.get(image, 0) > 0:
            self.deaths[image] -= 1
            fut.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        else:
            fut.set_result(fn(*args))
        return fut

    def wait_first(self, pending: list[Any]) -> list[Any]:
        return list(pending)

    @staticmethod
    def lost(err: BaseException) -> bool:
        return isinstance(err, BrokenProcessPool)

    def restart(self, generation: int) -> None:
        if generation == self.generation:
            self.restarts += 1
            self.generation += 1


def test_a_lost_worker_is_retried_once_then_recorded(fleet: Fleet) -> None:
    from vhdx.ops.batch import _drive

    images = fleet.good[:6]
    pool = _FlakyPool({images[1]: 1, images[4]: 5})  # one comes back, one keeps killing its worker
    written: list[dict[str, Any]] = []
    _drive(Job("hash"), list(images), {}, pool, written.append, Counter())
    recs = {r["image"]: r for r in written}
    assert len(written) == len(images) == len(recs)
    assert recs[images[1]]["ok"] and recs[images[1]]["result"]["digests"]["sha256"] == fleet.digests[images[1]]
    assert recs[images[4]]["ok"] is False and "did not complete" in recs[images[4]]["error"]
    assert all(recs[i]["ok"] for i in images if i != images[4])
    assert pool.restarts >= 1
