"""Options and helpers shared by several commands: sizes with suffixes, how parents are found,
opening an image, and clamping a byte range to the virtual disk."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

import vhdx
from vhdx._units import parse_size

from .errors import CommandError

F = TypeVar("F", bound=Callable[..., Any])


class SizeParam(click.ParamType):
    """A byte count: ``4096``, ``64K``, ``1.5M``, ``10G``, ``2TiB`` (binary units)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as err:
            self.fail(str(err), param, ctx)


SIZE = SizeParam()

IMAGE_ARGUMENT = click.argument("image", metavar="IMAGE", type=click.Path(path_type=str))


def parent_options(function: F) -> F:
    """Add ``--parent``, ``--parent-search`` and ``--ignore-id-mismatch`` (used by every command
    that opens a differencing disk)."""
    function = click.option(
        "--ignore-id-mismatch",
        is_flag=True,
        help="Accept a parent whose DataWriteGuid differs from the child's parent_linkage "
        "(like Hyper-V's -IgnoreIdMismatch).",
    )(function)
    function = click.option(
        "--parent-search",
        "parent_search",
        multiple=True,
        metavar="DIR",
        type=click.Path(path_type=str),
        help="Also look for parents (by the file name the child records) in DIR. Repeatable.",
    )(function)
    function = click.option(
        "--parent",
        metavar="PATH",
        type=click.Path(path_type=str),
        help="Use PATH as the parent of a differencing IMAGE instead of the paths it records.",
    )(function)
    return function


def open_image(
    image: str,
    *,
    parent: str | None = None,
    parent_search: Sequence[str] = (),
    ignore_id_mismatch: bool = False,
    require_parent: bool = True,
) -> vhdx.VirtualDisk:
    """Open ``image`` read-only with the parent options of the command line.

    Raises:
        vhdx.VhdxError, OSError: reported by ``vhdx_cli.main``.
        CommandError: IMAGE is not something an image can be read from (a directory, a FIFO).
    """
    try:
        return vhdx.open(
            image,
            "rb",
            parent=parent,
            parent_search=tuple(parent_search),
            ignore_id_mismatch=ignore_id_mismatch,
            require_parent=require_parent,
        )
    except ValueError as err:
        # The library reports a caller mistake as ValueError (here: the path names a directory or
        # another kind of file it cannot read); for the command line that is the user's input.
        raise CommandError(str(err)) from err


def clamp_range(image: str, size: int, offset: int, length: int | None) -> tuple[int, int]:
    """Return ``(offset, count)`` for a request on a ``size``-byte virtual disk.

    A length reaching past the end is clipped to the end (as ``dd`` and ``head -c`` do); an
    offset past the end is a mistake worth reporting rather than an empty result.

    Raises:
        CommandError: ``offset`` lies past the end of the disk.
    """
    if offset > size:
        raise CommandError(
            f"{image}: offset {offset} (0x{offset:x}) is past the end of the virtual disk ({size} bytes)"
        )
    remaining = size - offset
    return offset, remaining if length is None else min(length, remaining)


def range_options(function: F) -> F:
    """Add ``--offset`` and ``--length`` (byte counts with optional K/M/G/T suffixes)."""
    function = click.option(
        "--length",
        type=SIZE,
        default=None,
        help="Number of bytes (suffixes K, M, G, T); clipped at the end of the disk. Default: to the end.",
    )(function)
    function = click.option(
        "--offset",
        type=SIZE,
        default=0,
        show_default=True,
        help="First virtual byte (suffixes K, M, G, T). An offset past the end is an error.",
    )(function)
    return function
