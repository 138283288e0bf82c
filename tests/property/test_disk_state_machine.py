"""A hypothesis state machine drives a writable disk -- dynamic, fixed or differencing, 512 or
4096-byte sectors -- through writes of any alignment, reads, write_zeroes, discard, flushes,
closes and reopens (read-write and read-only), and compares every read with a bytearray model.

Oracle: the model. It is the parent's content (differencing) or zeros at the start, and each
write or write_zeroes is applied to it. discard is a hint: whole blocks of dynamic and
differencing disks must read as zeros afterwards (they become UNMAPPED); anywhere else -- partial
blocks, and every block of a fixed disk -- each byte must read either as before or as zero, and
the model then takes what the disk reads (after which it must stay stable, through closes and
reopens, like any other content). After every close both headers must be valid and the log empty.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from rawvhdx import read_headers

import vhdx

MiB = 1 << 20
BLOCK = MiB
PARENT_BLOCK = 2 * MiB


class DiskMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="vhdx-state-"))
        self.disk: vhdx.VirtualDisk | None = None
        self.model = bytearray()
        self.size = 0
        self.sector = 512
        self.kind = "dynamic"
        self.path = self.folder / "disk.vhdx"

    # --- setup -----------------------------------------------------------------------------------
    @initialize(kind=st.sampled_from(["dynamic", "fixed", "differencing"]), sector=st.sampled_from([512, 4096]),
                extra_sectors=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
    def create(self, kind: str, sector: int, extra_sectors: int, seed: int) -> None:
        self.kind, self.sector = kind, sector
        # Four whole blocks and maybe a partial fifth one.
        self.size = 4 * BLOCK + extra_sectors * sector
        if kind == "differencing":
            parent = self.folder / "parent.vhdx"
            rng = random.Random(seed)
            with vhdx.create(parent, self.size, block_size=PARENT_BLOCK, logical_sector_size=sector) as p:
                # Parent data in some places only: its holes (zeros) and data both show through.
                for _ in range(6):
                    offset = rng.randrange(self.size)
                    p.pwrite(offset, rng.randbytes(min(self.size - offset, rng.randrange(1, BLOCK))))
                self.model = bytearray(p.pread(0, self.size))
            self.disk = vhdx.create(self.path, parent=parent, block_size=BLOCK)
        else:
            self.model = bytearray(self.size)
            self.disk = vhdx.create(self.path, self.size, disk_type=kind, block_size=BLOCK,
                                    logical_sector_size=sector)
        assert self.disk.size == self.size

    def teardown(self) -> None:
        try:
            if self.disk is not None:
                self.disk.close()
                self._check_closed_file()
                with vhdx.open(self.path) as disk:
                    assert disk.read() == self.model
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    # --- strategies ------------------------------------------------------------------------------
    def _offset(self, data: st.DataObject) -> int:
        """Any byte, or one near a sector, 4 KiB or block boundary (where the edge cases are)."""
        near = data.draw(st.sampled_from([1, self.sector, 4096, BLOCK]))
        base = data.draw(st.integers(0, self.size // near)) * near
        return min(self.size - 1, max(0, base + data.draw(st.sampled_from([0, 0, -1, 1, -7, 13]))))

    def _range(self, data: st.DataObject, longest: int) -> tuple[int, int]:
        offset = self._offset(data) if data.draw(st.booleans()) else data.draw(st.integers(0, self.size - 1))
        kind = data.draw(st.sampled_from(["any", "sectors", "blocks"]))
        if kind == "sectors":
            offset -= offset % self.sector
            length = data.draw(st.integers(1, max(1, longest // self.sector))) * self.sector
        elif kind == "blocks":
            offset -= offset % BLOCK
            length = data.draw(st.integers(1, 3)) * BLOCK
        else:
            length = data.draw(st.integers(1, longest))
        return offset, max(1, min(length, self.size - offset))

    # --- rules -----------------------------------------------------------------------------------
    @precondition(lambda self: self.disk is not None)
    @rule(data=st.data(), seed=st.integers(0, 2**32 - 1))
    def write(self, data: st.DataObject, seed: int) -> None:
        assert self.disk is not None
        offset, length = self._range(data, 3 * BLOCK // 2)
        payload = random.Random(seed).randbytes(length)
        if data.draw(st.booleans()):
            self.disk.seek(offset)
            assert self.disk.write(payload) == length
            assert self.disk.tell() == offset + length
        else:
            assert self.disk.pwrite(offset, payload) == length
        self.model[offset : offset + length] = payload

    @precondition(lambda self: self.disk is not None)
    @rule(data=st.data())
    def read(self, data: st.DataObject) -> None:
        assert self.disk is not None
        offset, length = self._range(data, 2 * BLOCK)
        if data.draw(st.booleans()):
            assert self.disk.pread(offset, length) == self.model[offset : offset + length]
        else:
            self.disk.seek(offset)
            buf = bytearray(length)
            assert self.disk.readinto(buf) == length
            assert buf == self.model[offset : offset + length]

    @precondition(lambda self: self.disk is not None)
    @rule(data=st.data())
    def write_zeroes(self, data: st.DataObject) -> None:
        assert self.disk is not None
        offset, length = self._range(data, 2 * BLOCK)
        self.disk.write_zeroes(offset, length)
        self.model[offset : offset + length] = bytes(length)
        assert self.disk.pread(offset, length) == bytes(length)

    @precondition(lambda self: self.disk is not None)
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        assert self.disk is not None
        offset, length = self._range(data, 2 * BLOCK)
        end = offset + length
        self.disk.discard(offset, length)
        pos = offset
        while pos < end:
            block_start = pos - pos % BLOCK
            block_end = min(block_start + BLOCK, self.size)
            stop = min(end, block_end)
            got = self.disk.pread(pos, stop - pos)
            whole = pos == block_start and stop == block_end
            if whole and self.kind != "fixed":
                assert got == bytes(stop - pos), f"discarded block at {block_start} does not read as zeros"
            else:
                old = self.model[pos:stop]
                bad = [i for i in range(len(got)) if got[i] != old[i] and got[i] != 0]
                assert not bad, f"discard changed bytes at {pos + bad[0]} to something other than zero"
            self.model[pos:stop] = got
            pos = stop

    @precondition(lambda self: self.disk is not None)
    @rule()
    def flush(self) -> None:
        assert self.disk is not None
        self.disk.flush()

    @precondition(lambda self: self.disk is not None)
    @rule(read_only_check=st.booleans())
    def close_and_reopen(self, read_only_check: bool) -> None:
        assert self.disk is not None
        self.disk.close()
        self.disk = None
        self._check_closed_file()
        if read_only_check:
            with vhdx.open(self.path) as disk:
                assert not disk.has_pending_log
                assert disk.read() == self.model
        self.disk = vhdx.open(self.path, "r+b")
        assert self.disk.size == self.size

    @precondition(lambda self: self.disk is not None)
    @rule()
    def read_everything(self) -> None:
        assert self.disk is not None
        self.disk.seek(0)
        assert self.disk.read() == self.model

    @invariant()
    def position_is_sane(self) -> None:
        if self.disk is not None:
            assert 0 <= self.disk.tell()

    # --- helpers ---------------------------------------------------------------------------------
    def _check_closed_file(self) -> None:
        h1, h2 = read_headers(self.path)
        assert h1.valid and h2.valid
        assert abs(h1.sequence_number - h2.sequence_number) == 1
        assert h1.log_guid.int == 0 and h2.log_guid.int == 0


# Each example creates files and fsyncs; cap the examples so the file stays well under a minute on
# two cores (the "long" hypothesis profile lifts the cap).
_EXAMPLES = settings.default.max_examples
if os.environ.get("HYPOTHESIS_PROFILE") != "long":
    _EXAMPLES = min(_EXAMPLES, 50)
DiskMachine.TestCase.settings = settings(settings.default, max_examples=_EXAMPLES, stateful_step_count=25)
TestDiskStateMachine = DiskMachine.TestCase
