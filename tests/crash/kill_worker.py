"""Worker for the kill test: runs a write plan on an image and prints ``ACK n`` after the n-th
completed flush. Usage: python -m crash.kill_worker IMAGE SEED SIZE SECTOR STEPS [PARENT]"""

from __future__ import annotations

import sys

import vhdx

from .plan import make_plan


def main() -> None:
    image, seed, size, sector, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    parent = sys.argv[6] if len(sys.argv) > 6 else None
    acks = 0
    with vhdx.open(image, "r+b", parent=parent) as disk:
        print("READY", flush=True)
        for step in make_plan(seed, size, sector, steps):
            if step.kind == "write":
                disk.pwrite(step.offset, step.data)
            elif step.kind == "zeroes":
                disk.write_zeroes(step.offset, step.length)
            else:
                disk.flush()
                acks += 1
                print(f"ACK {acks}", flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
