"""Structure-aware mutations of seed images, shared by the hypothesis tests and the atheris harness.

A mutation names the structure it aims at (see ``corpus.Structure``) and one of:

* ``flip``: XOR one byte with a non-zero mask;
* ``overwrite``: replace 1-16 bytes with arbitrary ones;
* ``extreme``: set a field (2, 4 or 8 bytes, aligned inside the structure) to an edge value:
  0, 1, all ones, 2^31, 2^32, 2^46 (64 TiB), 2^63, 1 MiB, 4 KiB, ...;
* ``splice``: copy bytes from another structure of the same file over it;
* ``zero``: clear a run of bytes;
* ``truncate``: cut the file inside or just after the structure.

After the mutations, a checksummed structure may be resealed (its CRC recomputed), so the
damage reaches the rules behind the checksum instead of stopping at it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .corpus import Seed, Structure, reseal

EXTREMES = (0, 1, 2, 0x7F, 0xFF, 0x100, 0x1000, 0xFFFF, 0x10000, 0x100000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
            1 << 32, (1 << 32) + 0x100000, 1 << 40, 1 << 46, (1 << 46) + 0x100000, 1 << 63, (1 << 64) - 1,
            (1 << 64) - 0x100000)
KINDS = ("flip", "overwrite", "extreme", "splice", "zero", "truncate")
WIDTHS = (2, 4, 8)


@dataclass(frozen=True)
class Mutation:
    """One change to one structure. ``at``, ``value`` and ``other`` are raw choices reduced modulo
    what they index when applied, so any integers make a valid mutation (and shrink well)."""

    kind: str
    structure: int  # index into the seed's structures
    at: int
    value: int = 0
    payload: bytes = b""
    other: int = 0  # splice: the structure to copy from

    def describe(self, seed: Seed) -> str:
        s = seed.structures[self.structure % len(seed.structures)]
        return f"{self.kind} {s.name} at={self.at} value={self.value:#x} payload={self.payload.hex()} other={self.other}"


def _offset(s: Structure, at: int, width: int = 1) -> int:
    span = max(1, s.end - s.start - width + 1)
    pos = s.start + at % span
    # Fields are aligned to their width relative to the structure's start in every VHDX layout.
    return s.start + ((pos - s.start) // width) * width


def apply(seed: Seed, buf: bytearray, m: Mutation) -> bytearray:
    """Apply ``m`` to ``buf`` (a copy of the seed's bytes) and return the result (maybe shorter)."""
    s = seed.structures[m.structure % len(seed.structures)]
    if m.kind == "flip":
        pos = _offset(s, m.at)
        if pos < len(buf):
            buf[pos] ^= (m.value % 255) + 1
    elif m.kind == "overwrite":
        pos = _offset(s, m.at)
        data = m.payload[:16] or b"\xff"
        buf[pos : pos + len(data)] = data[: max(0, len(buf) - pos)]
    elif m.kind == "extreme":
        choice = m.value % (len(WIDTHS) + 1)  # 0: the structure's natural field width
        width = WIDTHS[choice - 1] if choice else s.width
        pos = _offset(s, m.at, width)
        value = EXTREMES[(m.value // (len(WIDTHS) + 1)) % len(EXTREMES)] & ((1 << (8 * width)) - 1)
        if pos + width <= len(buf):
            buf[pos : pos + width] = value.to_bytes(width, "little")
    elif m.kind == "splice":
        src = seed.structures[m.other % len(seed.structures)]
        n = 1 + m.value % 64
        frm = _offset(src, m.at // 7, 1)
        chunk = bytes(buf[frm : frm + n])
        pos = _offset(s, m.at)
        buf[pos : pos + len(chunk)] = chunk[: max(0, len(buf) - pos)]
    elif m.kind == "zero":
        pos = _offset(s, m.at)
        n = 1 + m.value % 64
        buf[pos : pos + n] = bytes(min(n, max(0, len(buf) - pos)))
    elif m.kind == "truncate":
        cut = s.start + m.at % (s.end - s.start + 2 * 4096)
        del buf[cut:]
    return buf


def mutate(seed: Seed, mutations: list[Mutation], seal: bool) -> bytes:
    """The seed's bytes with every mutation applied; the touched checksummed structures resealed
    when ``seal``."""
    buf = bytearray(seed.data)
    for m in mutations:
        buf = apply(seed, buf, m)
    if seal:
        for m in mutations:
            s = seed.structures[m.structure % len(seed.structures)]
            if s.seal is not None:
                reseal(buf, s.seal)
    return bytes(buf)


__all__ = ["EXTREMES", "KINDS", "Mutation", "apply", "mutate"]
