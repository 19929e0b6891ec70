#!/usr/bin/env bash
# Run the http_cache test suite: real proxy.py processes and origins on loopback.
# Installs what it needs (apt: tests/apt/http_cache.txt; Python: tests/requirements/http_cache.txt)
# into the project venv (.venv) when it has pip, otherwise into a venv of its own.
#   tests/http_cache/run.sh [pytest args...]
# Env: HTTP_CACHE_TEST_VENV (default ~/.cache/demolab/http_cache-test-venv when .venv is unusable)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

missing=()
while read -r pkg; do
  pkg="${pkg%%#*}"; pkg="${pkg//[[:space:]]/}"
  [ -n "$pkg" ] || continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < "$repo/tests/apt/http_cache.txt"
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "run.sh: missing Debian packages: ${missing[*]} (run as root or install them)" >&2
    exit 1
  fi
  echo "run.sh: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -x "$repo/.venv/bin/python" ] && "$repo/.venv/bin/python" -m pip --version >/dev/null 2>&1; then
  venv="$repo/.venv"
else
  venv="${HTTP_CACHE_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/demolab/http_cache-test-venv}"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
fi
reqs="$repo/tests/requirements/http_cache.txt"
stamp="$venv/.http_cache-reqs.sha256"
want="$(sha256sum "$reqs" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs"
  echo "$want" > "$stamp"
fi

[ -z "${HTTP_CACHE_PREPARE_ONLY:-}" ] || exit 0
export PYTHONDONTWRITEBYTECODE=1
cd "$repo"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q --durations=5 "$@" tests/http_cache
