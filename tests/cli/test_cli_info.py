"""``vhdx info``: text and --json output checked against expected.json (geometry, creator, log
state), against ``qemu-img info --output=json`` run now for the keys both report, and against the
file system for the sizes. Oracles: expected.json (including the parent's file name), qemu-img,
os.stat, and a header damaged on purpose."""

from __future__ import annotations

import json
import ntpath
import os
import re
import shutil
from pathlib import Path

import pytest

from cli_support import CHAIN_ID, entry
from helpers import image_of, require_tool, run
from vhdx.constants import HEADER_1_OFFSET, HEADER_2_OFFSET

# Windows/Hyper-V made, Disk2vhd, QEMU made, and the two images with a log that needs replay.
INFO_IDS = [
    "qemu/dyn-64M-bs1M",
    "qemu/fixed-64M-bs8M",
    "qemu/dyn-64M512-bs32M",
    "dissect.hypervisor/fixed.vhdx",
    "velociraptor/test",
    "coreos-hyperv/config2_base",
    "qemu-iotests/test-disk2vhd",
    "qemu-iotests/iotest-dirtylog-10G-4M",
    "discutils/vhdx-log-replay",
]
# The clean ones: qemu-img will not open an image with a pending log without write access.
QEMU_COMPARABLE = INFO_IDS[:-2]


def _info_json(invoke, *args: object) -> dict:
    result = invoke("info", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("entry_id", INFO_IDS)
def test_info_json_matches_expected(invoke, entry_id: str) -> None:
    e = entry(entry_id)
    path = image_of(e)
    doc = _info_json(invoke, path)
    data = doc["format-specific"]["data"]
    assert doc["format-specific"]["type"] == "vhdx"
    assert doc["format"] == "vhdx"
    assert doc["filename"] == str(path)
    assert doc["virtual-size"] == e.virtual_size
    assert doc["cluster-size"] == e.block_size
    assert doc["dirty-flag"] is e.log_needs_replay
    assert doc["actual-size"] == os.stat(path).st_blocks * 512
    assert data["file-size"] == e.image_size == os.path.getsize(path)
    assert data["disk-type"] == e.kind
    assert data["logical-sector-size"] == e.logical_sector_size
    assert data["physical-sector-size"] == e.physical_sector_size
    assert data["creator"] == e.creator
    assert data["total-blocks"] == -(-e.virtual_size // e.block_size)
    assert 0 <= data["allocated-blocks"] <= data["total-blocks"]
    assert 0.0 <= data["fragmentation-percentage"] <= 100.0
    assert data["current-header"] in (1, 2) and data["region-table"] in (1, 2)
    assert len(data["header-sequence-numbers"]) == 2
    assert data["parent-locator"] is None and data["parent-missing"] is None
    assert "backing-filename" not in doc and "full-backing-filename" not in doc
    # Only the qemu-img keys sit at the top level; every other DiskInfo field is kebab-case data.
    assert all("_" not in key for key in data)
    assert [layer["depth"] for layer in doc["chain"]] == [0]
    assert doc["chain"][0]["filename"] == str(path) and doc["chain"][0]["missing"] is False


@pytest.mark.parametrize("entry_id", INFO_IDS)
def test_info_text(invoke, entry_id: str) -> None:
    e = entry(entry_id)
    path = image_of(e)
    result = invoke("info", path)
    assert result.exit_code == 0, result.stderr
    fields = dict(re.findall(r"^\s*([a-z_ ]+): (.*)$", result.stdout, re.MULTILINE))
    assert fields["image"] == str(path)
    assert fields["file format"] == "vhdx"
    assert fields["virtual size"].endswith(f"({e.virtual_size} bytes)")
    assert fields["cluster_size"] == str(e.block_size)
    assert fields["type"] == e.kind
    assert fields["creator"] == e.creator
    assert fields["logical sector size"] == str(e.logical_sector_size)
    assert fields["log"].startswith("replayed in memory" if e.log_needs_replay else "empty")


@pytest.mark.interop
@pytest.mark.parametrize("entry_id", QEMU_COMPARABLE)
def test_info_json_agrees_with_qemu_img(invoke, entry_id: str) -> None:
    """Every key qemu-img reports for a VHDX has the same value in ours."""
    require_tool("qemu-img")
    e = entry(entry_id)
    assert not e.log_needs_replay
    path = image_of(e)
    theirs = json.loads(run("qemu-img", "info", "-U", "--output=json", "-f", "vhdx", str(path)).stdout)
    ours = _info_json(invoke, path)
    assert theirs, "qemu-img reported nothing"
    for key, value in theirs.items():
        assert ours[key] == value, key


def test_info_differencing_with_parent(invoke, chain_layout) -> None:
    doc = _info_json(invoke, chain_layout.child)
    data = doc["format-specific"]["data"]
    assert data["disk-type"] == "differencing"
    assert doc["virtual-size"] == chain_layout.child_entry.virtual_size
    assert ntpath.basename(doc["backing-filename"]) == chain_layout.child_entry.parent_name_on_disk
    assert Path(doc["full-backing-filename"]).samefile(chain_layout.parent)
    assert data["parent-missing"] is None and data["parent-link-ok"] is True
    assert [(layer["depth"], layer["type"]) for layer in doc["chain"]] == [(0, "differencing"), (1, "dynamic")]
    assert Path(doc["chain"][1]["filename"]).samefile(chain_layout.parent)
    assert doc["chain"][1]["virtual-size"] == chain_layout.parent_entry.virtual_size


def test_info_differencing_without_parent_still_reports(invoke, lonely_child: Path) -> None:
    """A child whose parent is missing is described (exit 0) and says the parent is missing."""
    doc = _info_json(invoke, lonely_child)
    data = doc["format-specific"]["data"]
    e = entry(CHAIN_ID)
    assert doc["virtual-size"] == e.virtual_size and data["disk-type"] == "differencing"
    assert ntpath.basename(doc["backing-filename"]) == e.parent_name_on_disk
    assert "full-backing-filename" not in doc
    assert "not found" in data["parent-missing"]
    assert doc["chain"][-1]["missing"] is True
    text = invoke("info", lonely_child)
    assert text.exit_code == 0
    assert re.search(r"^\s*parent: MISSING", text.stdout, re.MULTILINE)
    assert "actual path: MISSING" in text.stdout


def test_info_reports_tolerated_damage(invoke, tmp_path: Path) -> None:
    """Spoil the checksum of the header in use: the image still opens from the other copy, and
    info says so under problems (JSON) and in the text."""
    e = entry("velociraptor/test")
    before = _info_json(invoke, image_of(e))["format-specific"]["data"]
    assert before["problems"] == []
    used = before["current-header"]
    damaged = tmp_path / "damaged.vhdx"
    shutil.copyfile(image_of(e), damaged)
    with open(damaged, "r+b") as f:
        # Inside the header's checksummed span but past its fields: only the CRC can notice.
        f.seek((HEADER_1_OFFSET if used == 1 else HEADER_2_OFFSET) + 1024)
        f.write(b"\xff" * 4)
    after = _info_json(invoke, damaged)["format-specific"]["data"]
    assert after["current-header"] == 3 - used
    assert after["header-sequence-numbers"][used - 1] is None
    assert len(after["problems"]) == 1 and f"header {used}" in after["problems"][0]
    text = invoke("info", damaged).stdout
    assert re.search(rf"^\s+problems:\n\s+- .*header {used}", text, re.MULTILINE)
