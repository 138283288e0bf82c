"""Rendering for the commands: human text and JSON documents built from ``vhdx.DiskInfo`` and
``vhdx.Extent`` values. No format logic here: everything shown comes from the library.

JSON key names follow ``qemu-img`` where it has one (``virtual-size``, ``filename``,
``cluster-size``, ``format``, ``actual-size``, ``dirty-flag``, ``backing-filename``,
``full-backing-filename``; ``map``: ``start``, ``length``, ``depth``, ``present``, ``zero``,
``data``, ``offset``), so scripts written for ``qemu-img --output=json`` keep working; the rest
is the ``DiskInfo`` field name in kebab-case under ``format-specific.data``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import click

import vhdx
from vhdx._units import format_size
from vhdx.constants import PARENT_PATH_KEYS

INDENT = "    "

# DiskInfo fields that qemu-img names at the top level of ``info --output=json``.
_QEMU_INFO_KEYS = {
    "filename": "filename",
    "format": "format",
    "virtual_size": "virtual-size",
    "block_size": "cluster-size",
    "actual_size": "actual-size",
}


# --- small helpers ---------------------------------------------------------------------------------
def kebab(name: str) -> str:
    """``virtual_size`` -> ``virtual-size``."""
    return name.replace("_", "-")


def size_with_bytes(value: int) -> str:
    """``64 MiB (67108864 bytes)``, as qemu-img prints the virtual size."""
    return f"{format_size(value)} ({value} bytes)"


def emit_json(document: Any) -> None:
    """Print ``document`` as indented JSON on stdout."""
    click.echo(json.dumps(document, indent=4))


def emit_lines(lines: Iterable[str]) -> None:
    """Print text lines on stdout."""
    for line in lines:
        click.echo(line)


def recorded_parent_path(info: vhdx.DiskInfo) -> str | None:
    """The parent path the image records, from the locator key tried first (MS-VHDX 2.6.2.6.1)."""
    locator = info.parent_locator or {}
    for key in PARENT_PATH_KEYS:
        if locator.get(key):
            return locator[key]
    return None


def _layers(disk: vhdx.VirtualDisk, info: vhdx.DiskInfo) -> list[tuple[vhdx.VirtualDisk, vhdx.DiskInfo]]:
    """Pair every open layer (top first) with its DiskInfo."""
    return list(zip(disk.chain, (info, *info.chain)))


# --- chain -------------------------------------------------------------------------------------------
def chain_document(disk: vhdx.VirtualDisk, info: vhdx.DiskInfo) -> list[dict[str, Any]]:
    """One object per layer, top first; a parent that could not be found ends the list as an
    object with ``"missing": true``, its recorded path and the reason."""
    layers: list[dict[str, Any]] = []
    pairs = _layers(disk, info)
    for depth, (layer, layer_info) in enumerate(pairs):
        layers.append({
            "depth": depth,
            "filename": layer_info.filename,
            "missing": False,
            "format": layer_info.format,
            "type": layer_info.disk_type,
            "virtual-size": layer_info.virtual_size,
            "cluster-size": layer_info.block_size,
            "disk-id": layer_info.disk_id,
            "data-write-guid": layer_info.data_write_guid,
            "dirty-flag": layer.has_pending_log,
            "parent-linkage": layer_info.parent_linkage,
            "parent-link-ok": layer_info.parent_link_ok,
        })
    bottom = pairs[-1][1]
    if bottom.parent_missing is not None:
        layers.append({
            "depth": len(pairs),
            "filename": recorded_parent_path(bottom),
            "missing": True,
            "reason": bottom.parent_missing,
        })
    return layers


def chain_is_sound(layers: Sequence[dict[str, Any]]) -> bool:
    """No missing parent and no link that fails the DataWriteGuid check."""
    return all(not layer["missing"] and layer["parent-link-ok"] is not False for layer in layers)


def _link_text(layer: dict[str, Any], ignore_id_mismatch: bool) -> str | None:
    ok = layer["parent-link-ok"]
    if ok is None:
        return None
    if ok:
        return "ok (the parent's DataWriteGuid matches parent_linkage)"
    suffix = "ignored with --ignore-id-mismatch" if ignore_id_mismatch else "the parent changed after the child was made"
    return f"MISMATCH (the parent's DataWriteGuid is not parent_linkage; {suffix})"


def chain_lines(layers: Sequence[dict[str, Any]], *, ignore_id_mismatch: bool = False) -> list[str]:
    """Human rendering of ``chain_document``."""
    lines: list[str] = []
    for layer in layers:
        if layer["missing"]:
            lines.append(f"[{layer['depth']}] MISSING: {layer['filename'] or '(no path recorded)'}")
            lines.append(f"{INDENT}reason: {layer['reason']}")
            continue
        lines.append(f"[{layer['depth']}] {layer['filename']}")
        fields = [
            ("type", layer["type"]),
            ("virtual size", size_with_bytes(layer["virtual-size"])),
            ("block size", format_size(layer["cluster-size"])),
            ("disk id", layer["disk-id"]),
            ("data write guid", layer["data-write-guid"]),
        ]
        if layer["dirty-flag"]:
            fields.append(("log", "pending (replayed in memory)"))
        if layer["parent-linkage"] is not None:
            fields.append(("parent linkage", layer["parent-linkage"]))
        link = _link_text(layer, ignore_id_mismatch)
        if link is not None:
            fields.append(("link", link))
        lines.extend(f"{INDENT}{key}: {value}" for key, value in fields)
    return lines


# --- info --------------------------------------------------------------------------------------------
def info_document(disk: vhdx.VirtualDisk, info: vhdx.DiskInfo) -> dict[str, Any]:
    """``qemu-img info --output=json`` keys, then everything else under ``format-specific``."""
    document: dict[str, Any] = {
        "virtual-size": info.virtual_size,
        "filename": info.filename,
        "cluster-size": info.block_size,
        "format": info.format,
    }
    if info.actual_size is not None:  # qemu-img omits it when the file system cannot say
        document["actual-size"] = info.actual_size
    # qemu-img's dirty-flag means "needs repair before use"; for VHDX that is a log to replay.
    document["dirty-flag"] = disk.has_pending_log
    if info.parent_locator is not None:
        document["backing-filename"] = recorded_parent_path(info)
        if info.parent_path is not None:
            document["full-backing-filename"] = info.parent_path
    data = {kebab(key): value for key, value in info.to_dict().items() if key not in _QEMU_INFO_KEYS and key != "chain"}
    document["format-specific"] = {"type": "vhdx", "data": data}
    document["chain"] = chain_document(disk, info)
    remote = disk.remote_stats()
    if remote is not None:  # an image read by URL: what reading it cost (the whole chain, so far)
        document["remote"] = {kebab(key): value for key, value in remote.items()}
    return document


def info_lines(disk: vhdx.VirtualDisk, info: vhdx.DiskInfo) -> list[str]:
    """``qemu-img info`` lines first, then the VHDX detail (what Hyper-V's Get-VHD shows and more)."""
    lines = [
        f"image: {info.filename}",
        f"file format: {info.format}",
        f"virtual size: {size_with_bytes(info.virtual_size)}",
        f"disk size: {format_size(info.actual_size) if info.actual_size is not None else 'unavailable'}",
        f"cluster_size: {info.block_size}",
    ]
    recorded = recorded_parent_path(info)
    if info.parent_locator is not None:
        where = info.parent_path if info.parent_path is not None else "MISSING"
        lines.append(f"backing file: {recorded} (actual path: {where})")
    lines.append("Format specific information:")
    seq1, seq2 = info.header_sequence_numbers
    log = info.log_state
    if disk.has_pending_log:
        log += " (the file holds an unreplayed log; the file itself was not changed)"
    detail: list[tuple[str, str]] = [
        ("type", info.disk_type),
        ("file size", size_with_bytes(info.file_size)),
        ("block size", size_with_bytes(info.block_size)),
        ("logical sector size", str(info.logical_sector_size)),
        ("physical sector size", str(info.physical_sector_size)),
        ("disk id", info.disk_id),
        ("creator", info.creator or "(none)"),
        ("log", log),
        ("log guid", info.log_guid),
        ("log area", f"{format_size(info.log_length)} at 0x{info.log_offset:x}"),
        ("header sequence numbers", f"{_or_invalid(seq1)}, {_or_invalid(seq2)}"),
        ("current header", str(info.current_header)),
        ("region table in use", str(info.region_table)),
        ("data write guid", info.data_write_guid),
        ("file write guid", info.file_write_guid),
        ("allocated blocks", f"{info.allocated_blocks} of {info.total_blocks}"),
        ("fragmentation", f"{info.fragmentation_percentage}%"),
    ]
    remote = disk.remote_stats()
    if remote is not None:
        detail.append(("fetched", f"{size_with_bytes(remote['bytes_fetched'])} in {remote['requests']} requests"))
    lines.extend(f"{INDENT}{key}: {value}" for key, value in detail)
    if info.parent_locator is not None:
        if info.parent_path is not None:
            lines.append(f"{INDENT}parent: {info.parent_path}")
        else:
            lines.append(f"{INDENT}parent: MISSING ({info.parent_missing})")
        lines.append(f"{INDENT}parent locator:")
        lines.extend(f"{INDENT * 2}{key}: {value}" for key, value in info.parent_locator.items())
    if info.chain or info.parent_missing is not None:
        lines.append(f"{INDENT}chain:")
        for layer in chain_document(disk, info):
            if layer["missing"]:
                lines.append(f"{INDENT * 2}[{layer['depth']}] MISSING: {layer['filename']}")
            else:
                lines.append(f"{INDENT * 2}[{layer['depth']}] {layer['type']}: {layer['filename']}")
    if info.problems:
        lines.append(f"{INDENT}problems:")
        lines.extend(f"{INDENT * 2}- {problem}" for problem in info.problems)
    else:
        lines.append(f"{INDENT}problems: none")
    return lines


def _or_invalid(sequence_number: int | None) -> str:
    return "invalid" if sequence_number is None else str(sequence_number)


# --- map ---------------------------------------------------------------------------------------------
def map_entry(extent: vhdx.Extent) -> dict[str, Any]:
    """One ``qemu-img map --output=json`` object (``offset`` only where the bytes are stored)."""
    entry: dict[str, Any] = {"start": extent.virtual_offset, "length": extent.length, "depth": extent.depth}
    if extent.state == "data":
        entry.update(present=True, zero=False, data=True, offset=extent.file_offset)
    elif extent.state == "zero":
        entry.update(present=True, zero=True, data=False)
    else:  # unallocated: no layer stores it, reads as zeros
        entry.update(present=False, zero=True, data=False)
    return entry


def map_lines(extents: Iterable[vhdx.Extent], filenames: Sequence[str]) -> Iterable[str]:
    """``qemu-img map`` human format: the data extents only, hex columns, the file that holds them."""
    yield f"{'Offset':<16}{'Length':<16}{'Mapped to':<16}File"
    for extent in extents:
        if extent.state != "data":
            continue
        yield (f"{extent.virtual_offset:<#16x}{extent.length:<#16x}{extent.file_offset:<#16x}"
               f"{filenames[extent.depth]}")


# --- operation results (vhdx.ops) ------------------------------------------------------------------
def operation_document(result: Any) -> dict[str, Any]:
    """The JSON document of a ``vhdx.ops`` result: its ``as_dict()`` with kebab-case keys
    (nested dicts too), like every other document the CLI prints."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {kebab(str(k)): convert(v) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    document: dict[str, Any] = convert(result.as_dict())
    return document
