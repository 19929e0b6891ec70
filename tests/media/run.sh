#!/bin/bash
# tests/media/run.sh: the media suite with the REAL lab FFmpeg, Xvfb, PulseAudio, xclip and
# dmenu. Fresh Debian 12, root, no interaction.
#   1. `make deps venv`: the Debian packages of tests/apt/*.txt (FFmpeg build deps, Xvfb, ...)
#      and the project .venv (requirements-dev.txt + tests/requirements/*.txt)
#   2. the lab FFmpeg artifact: built once from the Debian source (~5-8 min on 2 cores) and
#      cached in $LAB_FFMPEG_STORE (default /var/cache/demolab/ffmpeg); reruns reuse it
#   3. pytest tests/media (the roles are applied to this machine by test_roles.py)
# Extra arguments go to pytest (e.g. bash tests/media/run.sh -k record).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/../.." && pwd)
export LAB_FFMPEG_STORE=${LAB_FFMPEG_STORE:-/var/cache/demolab/ffmpeg}
export DEBIAN_FRONTEND=noninteractive
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 )) s] $*"; }
[ "$(id -u)" = 0 ] || { echo "run.sh: run as root (installs packages, a test user, /opt)" >&2; exit 1; }

step "Debian packages and the project venv (make deps venv)"
command -v make >/dev/null || { apt-get update -q >/dev/null; apt-get install -y -q make >/dev/null; }
make -C "$REPO" --no-print-directory deps venv
VENV="$REPO/.venv"

step "lab FFmpeg artifact (store $LAB_FFMPEG_STORE)"
BUILD="$REPO/roles/ffmpeg/files/lab_ffmpeg_build.py"
if "$BUILD" --store "$LAB_FFMPEG_STORE" describe >/dev/null 2>&1; then
  echo "cached: $("$BUILD" --store "$LAB_FFMPEG_STORE" deb)"
else
  "$BUILD" sources >/dev/null   # a deb-src stanza derived from this machine's debian.sources
  "$BUILD" --store "$LAB_FFMPEG_STORE" ensure
fi

step "pytest tests/media"
cd "$REPO"
export ANSIBLE_PLAYBOOK="$VENV/bin/ansible-playbook"
set +e
"$VENV/bin/python" -m pytest tests/media -v -p no:cacheprovider --durations=10 "$@"
rc=$?
set -e
step "done (exit $rc)"
exit $rc
