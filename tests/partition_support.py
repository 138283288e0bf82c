"""Partitioned test disks made by an independent tool (util-linux sfdisk), as raw files and VHDX."""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path

import vhdx
from helpers import require_tool
from vhdx.ops import convert

MiB = 1 << 20

MBR_SCRIPT = """label: dos
start=2048, size=8192, type=83, bootable
start=10240, size=4096, type=7
start=16384, size=40960, type=5
start=18432, size=4096, type=83
start=24576, size=8192, type=82
start=34816, size=2048, type=c
"""

GPT_SCRIPT = """label: gpt
start=2048, size=8192, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"
start=10240, size=4096, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE, name="Microsoft reserved"
start=14336, size=20480, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="Basic data ünïcode", attrs="GUID:63"
start=36864, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="linux"
"""


def make_partitioned(folder: Path, scheme: str, size: int = 32 * MiB, seed: int = 1) -> tuple[Path, Path]:
    """A raw disk partitioned by sfdisk with some random data in every partition, and the same
    disk as a dynamic VHDX (1 MiB blocks). Returns (raw, vhdx)."""
    require_tool("sfdisk")
    raw = folder / f"{scheme}.raw"
    with open(raw, "wb") as f:
        f.truncate(size)
    script = MBR_SCRIPT if scheme == "mbr" else GPT_SCRIPT
    subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(raw)], input=script, text=True,
                   check=True, capture_output=True)
    rng = random.Random(seed)
    with open(raw, "r+b") as f:
        for part in sfdisk_json(raw)["partitions"]:
            if part.get("type") in ("5", "f", "85"):
                continue  # the extended container holds EBRs: leave them alone
            start = part["start"] * 512
            for _ in range(3):
                off = start + rng.randrange(0, part["size"] * 512 - 4096)
                f.seek(off)
                f.write(rng.randbytes(4096))
    image = folder / f"{scheme}.vhdx"
    convert(raw, image, block_size=MiB)
    return raw, image


def sfdisk_json(raw: Path) -> dict:
    out = subprocess.run(["sfdisk", "--json", str(raw)], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["partitiontable"]


def vhdx_bytes(image: Path) -> bytes:
    with vhdx.open(image) as d:
        return d.read()
