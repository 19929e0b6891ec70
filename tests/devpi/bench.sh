#!/usr/bin/env bash
# devpi offline vs --no-index --find-links for the demo lock: tests/devpi/bench.sh [--runs N]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
DEVPI_PREPARE_ONLY=1 bash "$here/run.sh"
export DEVPI_TEST_VENV="${DEVPI_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/demolab/devpi-test-venv}"
export DEVPI_TEST_WHEELS="${DEVPI_TEST_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/demolab/devpi-test-wheels}"
exec "$repo/.venv/bin/python" "$here/bench.py" "$@"
