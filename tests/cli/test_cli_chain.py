"""``vhdx chain``: layers top to bottom, the link check, and exit status 2 for a broken chain.

Oracles: pyvhdi run now (its identifier of a VHDX is the DataWriteGuid, its parent identifier the
child's parent_linkage), expected.json (sizes, kinds, the parent's file name), and a wrong
parent made by copying an unrelated image under the recorded name.
"""

from __future__ import annotations

import json
import ntpath
import shutil
import uuid
from pathlib import Path
from typing import Any

from cli_support import entry
from helpers import image_of, require_module


def _chain(invoke, *args: object, status: int = 0) -> list[dict[str, Any]]:
    result = invoke("chain", "--json", *args)
    assert result.exit_code == status, (result.exit_code, result.stderr)
    return json.loads(result.stdout)


def _guid(text: str) -> uuid.UUID:
    return uuid.UUID(text.strip("{}"))


def test_chain_of_differencing_disk(invoke, chain_layout) -> None:
    layers = _chain(invoke, chain_layout.child)
    child, parent = layers
    assert (child["depth"], child["type"], child["missing"]) == (0, "differencing", False)
    assert (parent["depth"], parent["type"], parent["missing"]) == (1, chain_layout.parent_entry.kind, False)
    assert Path(child["filename"]) == chain_layout.child
    assert Path(parent["filename"]).samefile(chain_layout.parent)
    assert child["virtual-size"] == chain_layout.child_entry.virtual_size
    assert parent["virtual-size"] == chain_layout.parent_entry.virtual_size
    assert child["cluster-size"] == chain_layout.child_entry.block_size
    assert parent["cluster-size"] == chain_layout.parent_entry.block_size
    assert child["parent-link-ok"] is True and parent["parent-link-ok"] is None
    assert parent["parent-linkage"] is None

    pyvhdi = require_module("pyvhdi")
    for layer, path in ((child, chain_layout.child), (parent, chain_layout.parent)):
        f = pyvhdi.file()
        f.open(str(path))
        try:
            assert _guid(layer["data-write-guid"]) == _guid(f.get_identifier())
            if layer["parent-linkage"] is not None:
                assert _guid(layer["parent-linkage"]) == _guid(f.get_parent_identifier())
        finally:
            f.close()


def test_chain_text(invoke, chain_layout) -> None:
    result = invoke("chain", chain_layout.child)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"[0] {chain_layout.child}\n")
    assert "\n[1] " in out and "MISSING" not in out and "MISMATCH" not in out
    assert "link: ok" in out


def test_chain_with_parent_elsewhere(invoke, chain_layout, tmp_path: Path) -> None:
    """--parent-search finds the parent by its recorded name; --parent takes any name."""
    child = shutil.copyfile(chain_layout.child, tmp_path / "child.avhdx")
    assert _chain(invoke, child, status=2)[-1]["missing"] is True
    layers = _chain(invoke, child, "--parent-search", chain_layout.folder)
    assert Path(layers[1]["filename"]).samefile(chain_layout.parent)
    renamed = tmp_path / "elsewhere" / "base.vhdx"
    renamed.parent.mkdir()
    shutil.copyfile(chain_layout.parent, renamed)
    layers = _chain(invoke, child, "--parent", renamed)
    assert Path(layers[1]["filename"]) == renamed and layers[0]["parent-link-ok"] is True


def test_chain_missing_parent_exit_2(invoke, lonely_child: Path) -> None:
    layers = _chain(invoke, lonely_child, status=2)
    assert [(x["depth"], x["missing"]) for x in layers] == [(0, False), (1, True)]
    e = entry("dissect.hypervisor/differencing.avhdx+synthetic-parent")
    assert ntpath.basename(layers[1]["filename"]) == e.parent_name_on_disk
    assert "not found" in layers[1]["reason"]
    text = invoke("chain", lonely_child)
    assert text.exit_code == 2
    assert "[1] MISSING: " in text.stdout
    assert text.stderr == ""


def test_chain_mismatched_parent(invoke, chain_layout, tmp_path: Path) -> None:
    """An unrelated image under the parent's name: marked MISMATCH, exit 2, unless accepted."""
    child = shutil.copyfile(chain_layout.child, tmp_path / chain_layout.child.name)
    impostor = image_of(entry("qemu/dyn-64M-bs1M"))  # same 512-byte sectors, another DataWriteGuid
    shutil.copyfile(impostor, tmp_path / chain_layout.child_entry.parent_name_on_disk)
    layers = _chain(invoke, child, status=2)
    assert layers[0]["parent-link-ok"] is False and len(layers) == 2
    text = invoke("chain", child)
    assert text.exit_code == 2 and "MISMATCH" in text.stdout
    accepted = _chain(invoke, child, "--ignore-id-mismatch")
    assert accepted[0]["parent-link-ok"] is False
    text = invoke("chain", child, "--ignore-id-mismatch")
    assert text.exit_code == 0 and "ignored with --ignore-id-mismatch" in text.stdout
    # info refuses the mismatched parent unless told to accept it, with a one-line error
    info = invoke("info", child)
    assert info.exit_code == 1 and info.stderr.startswith("vhdx: ") and len(info.stderr.splitlines()) == 1


def test_chain_of_plain_disk(invoke) -> None:
    e = entry("dissect.hypervisor/fixed.vhdx")
    layers = _chain(invoke, image_of(e))
    assert len(layers) == 1
    assert layers[0]["type"] == "fixed" and layers[0]["parent-link-ok"] is None
