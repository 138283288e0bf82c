#!/usr/bin/env bash
# Run the whole test suite: set up .venv if needed (scripts/bootstrap.sh), then pytest.
#
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -q -x -k sample`. Works from any
# directory and on a fresh clone. The exit status is pytest's own; "no tests collected" (5) is
# a failure like any other non-zero status.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest tests "$@"
