"""The check made before an image is attached: ``vhdx check`` on the image and its parents, then
opening the differencing chain. Attaching hands the image to something that trusts it (Windows'
vhdmp, the kernel's NBD client, a file system driver), so damage is reported here first.

Refused: corruptions (in the image or any parent), a check that could not complete, and a chain
that does not open (a parent missing, or one whose DataWriteGuid no longer matches the child's
parent_linkage, unless ``ignore_id_mismatch``). A pending log counts as a corruption for
``vhdx check``, and it matters here too: Windows replays it on attach (writing the file), which
is why a dirty image can fail a read-only attach; ``vhdx check --repair`` replays it first.
Allowed, with a note: leaks (unreferenced space, harmless to the data).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import vhdx
from vhdx.ops.check import CheckReport, check

from .backends import AttachError

SHOWN_FINDINGS = 3  # how many corruption findings the refusal quotes


@dataclass
class PreflightResult:
    """What the check found that did not stop the attach.

    Attributes:
        image: the image checked.
        chain: the files of the chain, the image first (one entry when it is not differencing).
        leaks: leaked MiB over the whole chain.
        notes: lines worth showing the user (leaks).
    """

    image: str
    chain: list[str] = field(default_factory=list)
    leaks: int = 0
    notes: list[str] = field(default_factory=list)


def _reports(report: CheckReport) -> list[CheckReport]:
    out = []
    current: CheckReport | None = report
    while current is not None:
        out.append(current)
        current = current.parent
    return out


def preflight(image: str, *, parent: str | None = None, parent_search: Sequence[str] = (),
              ignore_id_mismatch: bool = False) -> PreflightResult:
    """Check ``image`` (and its parents) before attaching it.

    Raises:
        AttachError: corruptions, an incomplete check, or a chain that does not open; the message
            quotes the first findings and names the command that shows them all.
        OSError: the file cannot be read.
    """
    try:
        report = check(image, parent=parent, parent_search=tuple(parent_search),
                       ignore_id_mismatch=ignore_id_mismatch)
    except ValueError as err:  # a directory, a FIFO
        raise AttachError(str(err)) from None
    reports = _reports(report)
    problems: list[str] = []
    corruptions = 0
    for r in reports:
        problems += [f"{r.filename}: the check could not complete: {e}" for e in r.check_errors]
        corruptions += r.corruptions
        problems += [f"{r.filename}: {f.structure}: {f.message}" for f in r.findings
                     if f.severity == "corruption" and not f.fixed]
    if problems:
        shown = "; ".join(problems[:SHOWN_FINDINGS])
        more = f" (and {len(problems) - SHOWN_FINDINGS} more)" if len(problems) > SHOWN_FINDINGS else ""
        what = f"{corruptions} corruption(s)" if corruptions else "problems"
        raise AttachError(f"{image}: refusing to attach: vhdx check found {what}: {shown}{more}; run "
                          f"'vhdx check {image}' for the full report, 'vhdx check --repair' to repair what can "
                          "be repaired, or pass --skip-check to attach anyway")
    result = PreflightResult(image=image)
    result.leaks = sum(r.leaks for r in reports)
    if result.leaks:
        result.notes.append(f"{image}: {result.leaks} MiB of leaked (unreferenced) space; harmless to the data, "
                            "'vhdx compact' reclaims it")
    # The check examined each layer on its own; opening proves the layers also link up the way the
    # reader (and Hyper-V) will follow them.
    try:
        with vhdx.open(image, parent=parent, parent_search=tuple(parent_search),
                       ignore_id_mismatch=ignore_id_mismatch) as disk:
            result.chain = [os.fspath(layer.name) for layer in disk.chain]
    except vhdx.VhdxError as err:
        raise AttachError(f"{image}: refusing to attach: the differencing chain does not open: {err}") from None
    return result
