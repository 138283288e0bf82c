"""Pure integer helpers: rounding, alignment, powers of two, human sizes."""

from __future__ import annotations

import re

_SIZE_SUFFIXES = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


def ceil_div(a: int, b: int) -> int:
    """Return ``ceil(a / b)`` for non-negative integers."""
    return -(-a // b)


def align_up(value: int, alignment: int) -> int:
    """Round ``value`` up to a multiple of ``alignment``."""
    return ceil_div(value, alignment) * alignment


def align_down(value: int, alignment: int) -> int:
    """Round ``value`` down to a multiple of ``alignment``."""
    return (value // alignment) * alignment


def is_power_of_two(value: int) -> bool:
    """Return True if ``value`` is a positive power of two."""
    return value > 0 and value & (value - 1) == 0


def parse_size(text: str) -> int:
    """Parse ``"10G"``, ``"64T"``, ``"512"``, ``"1.5M"``, ``"32MiB"`` into bytes (binary units).

    Raises:
        ValueError: the text is not a size.
    """
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {text!r} (expected a number with an optional K, M, G, T suffix)")
    number, suffix = m.groups()
    value = float(number) * _SIZE_SUFFIXES[suffix.upper()] if "." in number else int(number) * _SIZE_SUFFIXES[suffix.upper()]
    if value != int(value):
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(value)


def format_size(value: int) -> str:
    """Render a byte count the way qemu-img does (``1 GiB``, ``64 MiB``, ``512 B``)."""
    for unit, factor in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= factor:
            scaled = value / factor
            return f"{scaled:.3g} {unit}" if scaled != int(scaled) else f"{int(scaled)} {unit}"
    return f"{value} B"
