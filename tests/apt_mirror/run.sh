#!/usr/bin/env bash
# apt_mirror on real hosts: host A fills the flat repo from mirror/apt-packages.txt through the
# harness's forward proxy and serves it; with the proxy stopped, host B installs from A alone.
#   tests/apt_mirror/run.sh [--keep] [--packages redis-server ...]
# Hosts aptm1/aptm2 (10.77.0.51-52), forward proxy on DEMOLAB_PROXY_PORT (default 3144 here,
# so it never meets the main suite's 3142). Needs root. Logs: .run/apt_mirror/*.log
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
[ "$(id -u)" -eq 0 ] || { echo "run.sh: needs root (namespaces, mounts, nspawn)" >&2; exit 1; }

missing=()
while read -r pkg; do
  pkg="${pkg%%#*}"; pkg="${pkg//[[:space:]]/}"
  [ -n "$pkg" ] || continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done < "$repo/tests/apt/apt_mirror.txt"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "run.sh: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# ansible and pytest live in the project venv.
[ -x "$repo/.venv/bin/ansible-playbook" ] || make -C "$repo" --no-print-directory venv

export DEMOLAB_PROXY_PORT="${DEMOLAB_PROXY_PORT:-3144}"
export PYTHONDONTWRITEBYTECODE=1
exec "$repo/.venv/bin/python" "$here/scenario.py" "$@"
