#!/usr/bin/env bash
# Cache-hit benchmark: demolab http_cache vs Squid (offline_mode on), loopback only, bounded.
#   tests/http_cache/bench.sh [--duration SECONDS] [--clients N] [--rounds N]
# Installs squid and wrk (Debian) if missing; runs Squid itself on a random loopback port with its
# own config (a Debian squid service started by the package, if any, is left alone).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
missing=()
for pkg in squid wrk; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "bench.sh: install ${missing[*]} first (needs root)" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# same interpreter and pins as the tests (run.sh prepares them)
HTTP_CACHE_PREPARE_ONLY=1 "$here/run.sh"
export PYTHONDONTWRITEBYTECODE=1
exec timeout 600 "$repo/.venv/bin/python" "$here/bench.py" "$@"
