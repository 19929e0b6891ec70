#!/usr/bin/env bash
# Run the http_cache test suite: real proxy.py processes and origins on loopback.
# `make deps venv` installs what it needs (apt: tests/apt/http_cache.txt; Python:
# tests/requirements/http_cache.txt into the project venv .venv).
#   tests/http_cache/run.sh [pytest args...]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
make -C "$repo" --no-print-directory deps venv
[ -z "${HTTP_CACHE_PREPARE_ONLY:-}" ] || exit 0
export PYTHONDONTWRITEBYTECODE=1
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest -p no:cacheprovider -q --durations=5 "$@" tests/http_cache
