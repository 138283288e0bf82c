#!/usr/bin/env bash
# Create (or repair) the project virtualenv in .venv and install the project with its test extras.
#
# Idempotent: when .venv works and pyproject.toml is unchanged since the last successful install
# (a content hash kept in .venv/.bootstrap-stamp), it does nothing and takes well under a second.
# Works from any directory. Environment: PYTHON (interpreter used to create the venv, default
# python3, needs >= 3.10).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV=.venv
STAMP="$VENV/.bootstrap-stamp"
PYTHON="${PYTHON:-python3}"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# Two runs at once (e.g. two test.sh in the same checkout) must not install over each other.
# The lock lives outside the repository so it never shows up in git status.
if command -v flock >/dev/null 2>&1; then
    lock="${TMPDIR:-/tmp}/vhdx-bootstrap-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1).lock"
    exec 9>"$lock"
    flock 9
fi

# What the installed state depends on: the dependency list and the interpreter's version.
want_stamp() {
    local py_version
    py_version="$("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0])')"
    printf '%s python-%s\n' "$(sha256sum pyproject.toml | cut -d' ' -f1)" "$py_version"
}

venv_works() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys, pip' >/dev/null 2>&1
}

if ! venv_works; then
    if [ -e "$VENV" ]; then
        log "$VENV is broken, recreating it"
        rm -rf "$VENV"
    fi
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        log "$PYTHON is missing or older than 3.10 (set PYTHON=/path/to/python3.x)"
        exit 1
    fi
    log "creating $VENV with $("$PYTHON" --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

# Skip when up to date, but only if the project is actually importable from the venv (a stamp
# copied with a tree, or an uninstall by hand, must not fool us). find_spec does not import,
# so this stays fast.
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(want_stamp)" ] \
    && "$VENV/bin/python" -c '
import importlib.util, sys
sys.exit(any(importlib.util.find_spec(m) is None for m in ("vhdx", "pytest")))' 2>/dev/null; then
    exit 0
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# Editable installs from pyproject.toml (PEP 660) need pip >= 21.3; upgrade only older pips.
if ! "$VENV/bin/python" -c '
import sys
from pip import __version__ as v
sys.exit(tuple(int(p) for p in v.split(".")[:2] if p.isdigit()) < (21, 3))'; then
    log "upgrading pip"
    "${PIP[@]}" install -q --upgrade pip
fi

log "installing the project and its test dependencies into $VENV"
"${PIP[@]}" install -q -e '.[test]'
rm -f "$STAMP"
want_stamp >"$STAMP"
log "done"
