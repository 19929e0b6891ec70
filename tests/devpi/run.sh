#!/usr/bin/env bash
# Run the devpi test suite: a real devpi-server on a free loopback port with a temporary
# serverdir, filled by roles/devpi/files/demolab_devpi.py from small hashed locks served by a
# loopback "PyPI" (no internet needed once the venvs exist).
# Installs what it needs (`make deps venv`: apt tests/apt/devpi.txt, Python tests/requirements/devpi.txt
# into .venv; devpi-server + devpi-client from roles/devpi/files/requirements.lock, hashes
# enforced, into a venv of their own).
#   tests/devpi/run.sh [pytest args...]
# Env: DEVPI_TEST_VENV (default ~/.cache/demolab/devpi-test-venv), DEVPI_TEST_VENV_WHEELS, DEVPI_TEST_WHEELS (default
#      ~/.cache/demolab/devpi-test-wheels: the wheels of mirror/requirements.lock),
#      DEVPI_PREPARE_ONLY=1 (build the venvs and the wheel cache, run nothing)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

# apt (tests/apt/devpi.txt) and pytest + ansible in the project venv (tests/requirements/devpi.txt)
make -C "$repo" --no-print-directory deps venv
venv="$repo/.venv"

# Downloads below reach the upstream index, never the lab's own (mirror/upstream_pip.py).
eval "$(python3 "$repo/mirror/upstream_pip.py" --conf "$venv/pip-upstream.conf")"

# devpi-server/devpi-client exactly as the role installs them (same lock, hashes enforced).
# Their wheels are kept too: the role test installs the role's venv from a loopback index.
lock="$repo/roles/devpi/files/requirements.lock"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/demolab"
dvenv="${DEVPI_TEST_VENV:-$cache/devpi-test-venv}"
vwheels="${DEVPI_TEST_VENV_WHEELS:-$cache/devpi-venv-wheels}"
dstamp="$dvenv/.lock.sha256"
dwant="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ "$(cat "$dstamp" 2>/dev/null)" != "$dwant" ] || [ "$(cat "$vwheels/.lock.sha256" 2>/dev/null)" != "$dwant" ]; then
  rm -rf "$dvenv" "$vwheels"
  /usr/bin/python3 -m venv "$dvenv"
  "$dvenv/bin/python" -m pip download -q --disable-pip-version-check --require-hashes \
    --only-binary=:all: --no-deps -d "$vwheels" -r "$lock" 2> >(grep -v 'is ignored' >&2)
  PIP_CONFIG_FILE=/dev/null "$dvenv/bin/python" -m pip install -q --disable-pip-version-check \
    --require-hashes --only-binary=:all: --no-deps --no-index --find-links "$vwheels" -r "$lock"
  echo "$dwant" > "$vwheels/.lock.sha256"
  echo "$dwant" > "$dstamp"
fi
export DEVPI_TEST_VENV_WHEELS="$vwheels"
export DEVPI_TEST_VENV="$dvenv"

# The wheels of the lab's real lock (mirror/requirements.lock), fetched once through this
# machine's own pip configuration (hashes enforced); the tests serve them from a loopback
# stand-in for PyPI, so the suite itself never leaves the machine.
mlock="$repo/mirror/requirements.lock"
wheels="${DEVPI_TEST_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/demolab/devpi-test-wheels}"
wstamp="$wheels/.lock.sha256"
wwant="$(sha256sum "$mlock" | cut -d' ' -f1)"
if [ "$(cat "$wstamp" 2>/dev/null)" != "$wwant" ]; then
  rm -rf "$wheels"
  mkdir -p "$wheels"
  targets="$(sed -n 's/^# Targets: //p' "$mlock")"
  for target in $targets; do
    plats=()
    IFS=, read -ra plist <<< "${target#*:}"
    for p in "${plist[@]}"; do plats+=(--platform "$p"); done
    "$dvenv/bin/python" -m pip download -q --disable-pip-version-check --require-hashes \
      --no-deps --only-binary=:all: --implementation cp --python-version "${target%%:*}" \
      "${plats[@]}" -d "$wheels" -r "$mlock" 2> >(grep -v 'is ignored' >&2)
  done
  echo "$wwant" > "$wstamp"
fi
export DEVPI_TEST_WHEELS="$wheels"

[ -z "${DEVPI_PREPARE_ONLY:-}" ] || exit 0
export PYTHONDONTWRITEBYTECODE=1
cd "$repo"
exec "$venv/bin/python" -m pytest -p no:cacheprovider -q -s --durations=6 "$@" tests/devpi
