"""Architecture rules, checked on the source with ``ast`` (ARCHITECTURE.md conventions 2, 5 and 6).

1. Imports point down the stack only: structs < model < engine < disk/create/info (and the
   package ``__init__``) < ops < cli. ``errors``, ``constants``, ``_units`` and ``checksum`` are
   importable from anywhere and import nothing above themselves. Every module must belong to a
   layer, so a new top-level module has to be placed deliberately.
2. Below the public API only ``engine/source.py`` does I/O: no ``open(``, ``.read(``, ``.write(``,
   ``.seek(`` or ``os.pread`` (and relatives) in ``structs/``, ``model/`` or ``engine/``. A call on
   ``self`` (a class using its own ``write`` method) is not file I/O and is not reported.
3. No format literals (``1 << 20``, ``1024 * 1024``, ``65536``, ``2**23``, ...) in the library
   outside ``constants.py``. ``_units.py`` is exempt: it is where KiB/MiB-style unit factors for
   parsing and printing sizes live by design (ARCHITECTURE.md, module layout).

Known violations in the current code are marked ``xfail(strict=True)`` per file, with the
offending lines in the reason, so the test turns red again once they are fixed (remove the mark).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
CLI = ROOT / "cli"

FREE = 0  # errors, constants, _units, checksum
LAYERS = {
    "errors": FREE, "constants": FREE, "_units": FREE, "checksum": FREE,
    "structs": 1, "model": 2, "engine": 3,
    "disk": 4, "create": 4, "info": 4, "newfile": 4,  # the public API (the package __init__ is here too)
    "ops": 5,
}
PUBLIC = 4
CLI_LAYER = 6
LAYER_NAMES = {0: "errors/constants/_units/checksum", 1: "structs", 2: "model", 3: "engine",
               4: "disk/create/info", 5: "ops", 6: "cli"}


def module_files() -> dict[str, Path]:
    """Every module of the library and the CLI, by dotted name."""
    out: dict[str, Path] = {}
    for base in (SRC, CLI):
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = list(rel.parts)
            if parts[0] not in ("vhdx", "vhdx_cli"):
                continue
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = module_files()


def layer_of(module: str) -> int | None:
    """Layer of a dotted module name; None for third-party modules."""
    parts = module.split(".")
    if parts[0] == "vhdx_cli":
        return CLI_LAYER
    if parts[0] != "vhdx":
        return None
    if len(parts) == 1:
        return PUBLIC
    if parts[1] not in LAYERS:
        raise LookupError(f"module {module} has no layer: add it to LAYERS in tests/test_layering.py")
    return LAYERS[parts[1]]


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                # ``from pkg import submodule`` imports the submodule; otherwise the name lives in ``base``.
                found.append((node.lineno, candidate if candidate in MODULES else base))
    return found


def test_every_module_has_a_layer() -> None:
    assert "vhdx" in MODULES, f"library not found under {SRC}"
    for module in MODULES:
        layer_of(module)


def _marked(cases: dict[str, list[str]], known: dict[str, str]) -> list[object]:
    return [pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=known[name])) if name in known else name
            for name in sorted(cases)]


# --- 1. import direction -----------------------------------------------------------------------------

KNOWN_UPWARD_IMPORTS: dict[str, str] = {}


@pytest.mark.parametrize("module", _marked({m: [] for m in MODULES}, KNOWN_UPWARD_IMPORTS))
def test_imports_point_down_the_stack(module: str) -> None:
    own = layer_of(module)
    assert own is not None
    bad = []
    for line, target in imports_of(module, MODULES[module]):
        layer = layer_of(target)
        if layer is not None and layer > own:
            bad.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {LAYER_NAMES[own]} module {module} imports "
                       f"{target} ({LAYER_NAMES[layer]})")
    assert not bad, "\n".join(bad)


def test_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    # The checker itself: an engine module importing the public API is reported.
    fake = tmp_path / "x.py"
    fake.write_text("from ..disk import VirtualDisk\nfrom .. import constants\nimport numpy\n")
    found = imports_of("vhdx.engine.x", fake)
    assert [t for _, t in found] == ["vhdx.disk", "vhdx.constants", "numpy"]
    assert [layer_of(t) for _, t in found] == [PUBLIC, FREE, None]


# --- 2. no I/O below the public API ------------------------------------------------------------------

IO_METHODS = {"read", "write", "seek"}
OS_IO = {"pread", "preadv", "pwrite", "pwritev", "open", "read", "write", "lseek", "fdopen"}
SANS_IO = [m for m in MODULES if m.split(".")[:2] in (["vhdx", "structs"], ["vhdx", "model"], ["vhdx", "engine"])
           and m != "vhdx.engine.source"]
KNOWN_IO: dict[str, str] = {}


def io_calls(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "io", "builtins"):
            names = {a.name for a in node.names} & (OS_IO | {"open"})
            if names:
                hits.append(f"{node.lineno}: from {node.module} import {', '.join(sorted(names))}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            hits.append(f"{node.lineno}: open(")
        elif isinstance(func, ast.Attribute):
            owner = func.value.id if isinstance(func.value, ast.Name) else None
            # ``self.write(...)`` is a class calling its own method (the writable engine's virtual
            # write), not file I/O; any other receiver is treated as a file.
            if func.attr in IO_METHODS and owner != "self":
                hits.append(f"{node.lineno}: .{func.attr}(")
            elif owner == "os" and func.attr in OS_IO:
                hits.append(f"{node.lineno}: os.{func.attr}(")
            elif owner in ("io", "builtins") and func.attr == "open":
                hits.append(f"{node.lineno}: {owner}.open(")
    return hits


@pytest.mark.parametrize("module", _marked({m: [] for m in SANS_IO}, KNOWN_IO))
def test_no_io_below_the_public_api(module: str) -> None:
    path = MODULES[module]
    hits = io_calls(path)
    assert not hits, "\n".join(f"{path.relative_to(ROOT)}:{h}" for h in hits)


def test_io_check_catches_calls(tmp_path: Path) -> None:
    fake = tmp_path / "x.py"
    fake.write_text("import os\nf = open('x')\nf.seek(0)\nos.pread(3, 1, 0)\nsource.readinto(0, b)\nself.write(0, b)\n"
                    "self.source.write(b)\n")
    assert [h.split(":")[0] for h in io_calls(fake)] == ["2", "3", "4", "7"]


# --- 3. no format literals outside constants.py --------------------------------------------------------

LITERAL_EXEMPT = {"vhdx.constants", "vhdx._units"}
LIBRARY = [m for m in MODULES if m.split(".")[0] == "vhdx" and m not in LITERAL_EXEMPT]
# Bare values that only mean something in the format (sizes of 64 KiB and up are all powers of
# two; 2047 is the region/metadata entry limit).
MIN_FORMAT_SIZE = 1 << 16
FORMAT_VALUES = {2047, 0xFFFFFFFFFFF00000}
KNOWN_LITERALS: dict[str, str] = {}


def _const(node: ast.AST) -> int | None:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp):
        left, right = _const(node.left), _const(node.right)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Mult):
            return left * right
        if isinstance(node.op, ast.LShift) and 0 <= right < 128:
            return left << right
        if isinstance(node.op, ast.Pow) and 0 <= right < 128:
            return left**right
    return None


def format_literals(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    hits = []
    nested: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.LShift, ast.Pow)) and id(node) not in nested:
            value = _const(node)
            if value is not None and value >= 512:
                hits.append(f"{node.lineno}: {ast.unparse(node)}")
                nested.update(id(n) for n in ast.walk(node))
        elif isinstance(node, ast.Constant) and type(node.value) is int and id(node) not in nested:
            v = node.value
            if v in FORMAT_VALUES or (v >= MIN_FORMAT_SIZE and v & (v - 1) == 0):
                hits.append(f"{node.lineno}: {v}")
    return hits


@pytest.mark.parametrize("module", _marked({m: [] for m in LIBRARY}, KNOWN_LITERALS))
def test_no_format_literals_outside_constants(module: str) -> None:
    path = MODULES[module]
    hits = format_literals(path)
    assert not hits, "\n".join(f"{path.relative_to(ROOT)}:{h}" for h in hits)


def test_literal_check_catches_the_usual_forms(tmp_path: Path) -> None:
    fake = tmp_path / "x.py"
    fake.write_text("a = 1 << 20\nb = 1024 * 1024\nc = 65536\nd = 2**23\ne = 64 * 1024\nf = 4 * KiB\ng = x << 20\n"
                    "h = 512\ni = 8\nj = 2047\n")
    assert [h.split(":")[0] for h in format_literals(fake)] == ["1", "2", "3", "4", "5", "10"]
