#!/bin/bash
# tests/media/bench.sh: what the lab FFmpeg costs and what it buys.
#   1. build time (fresh build from the Debian source in a scratch store) vs reinstall from
#      the artifact (dpkg -i of the .deb; goal <= 5 % of the build)
#   2. encode of a 30 s 640x360 H.264/AAC clip to WebM, lab FFmpeg vs Debian's ffmpeg with the
#      same settings (ratio lab/Debian, goal <= 1.0x) and the real-time factor
# Needs root, the packages of tests/apt/media.txt (run.sh installs them) and Debian's ffmpeg
# (installed here if missing). BENCH_SKIP_BUILD=1 reuses the cached artifact's build time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); REPO=$(cd "$HERE/../.." && pwd)
BUILD="$REPO/roles/ffmpeg/files/lab_ffmpeg_build.py"
CACHE=${LAB_FFMPEG_STORE:-/var/cache/demolab/ffmpeg}
RUNS=${BENCH_RUNS:-5}
export DEBIAN_FRONTEND=noninteractive
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b-a}'; }
median() { sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
best() { sort -n | head -n 1; }

if ! command -v /usr/bin/ffmpeg >/dev/null; then
  apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 ffmpeg >/dev/null
fi
work=$(mktemp -d /var/tmp/demolab-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- 1. build vs reinstall
if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then
  json=$("$BUILD" --store "$CACHE" describe)
  build_s=$(sed -n 's/.*"build_seconds": \([0-9]*\).*/\1/p' "$(echo "$json" | sed -n 's/.*"manifest": "\([^"]*\)".*/\1/p')")
  echo "build: ${build_s} s (from the cached manifest)"
else
  store="$work/store"; mkdir -p "$store/src"
  "$BUILD" sources >/dev/null   # deb-src derived from debian.sources (no-op when present)
  t=$(now); "$BUILD" --store "$store" fetch 2>/dev/null; fetch_s=$(secs "$t" "$(now)")
  t=$(now); json=$("$BUILD" --store "$store" --build-dir "$work/build" ensure); build_s=$(secs "$t" "$(now)")
  echo "source download (apt-get source): ${fetch_s} s"
  echo "build (unpack+configure+make -j$(nproc)+package): ${build_s} s"
fi
deb=$(echo "$json" | sed -n 's/.*"deb": "\([^"]*\)".*/\1/p')
ffmpeg_lab=$(echo "$json" | sed -n 's/.*"ffmpeg": "\([^"]*\)".*/\1/p')
echo "artifact: $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)"
for _ in $(seq "$RUNS"); do
  t=$(now); dpkg -i "$deb" >/dev/null; secs "$t" "$(now)"; echo
done | median > "$work/reinstall"
reinstall_s=$(cat "$work/reinstall")
root="$work/root"; mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"; touch "$root/var/lib/dpkg/status"
t=$(now); dpkg --root="$root" --force-depends --log=/dev/null -i "$deb" >/dev/null 2>&1; freshroot_s=$(secs "$t" "$(now)")
echo "reinstall from artifact (dpkg -i, median of $RUNS): ${reinstall_s} s; into an empty root: ${freshroot_s} s"
awk -v r="$reinstall_s" -v b="$build_s" 'BEGIN{p=100*r/b; printf "reinstall/build: %.2f %% (goal <= 5 %%): %s\n", p, (p<=5?"OK":"MISSED")}'

# ---------------------------------------------------------------- 2. encode
clip="$work/clip.mp4"
/usr/bin/ffmpeg -hide_banner -nostdin -v error -f lavfi -i testsrc2=size=640x360:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t 30 -c:v libx264 -preset veryfast -pix_fmt yuv420p \
  -c:a aac -b:a 128k "$clip"
one() {  # BIN NAME ARGS... -> "wall_s cpu_s" of one encode (cpu = user + sys of FFmpeg)
  local bin=$1 name=$2 t; shift 2
  t=$( { TIMEFORMAT='%R %U %S'; time "$bin" -hide_banner -nostdin -v error -y -threads 2 -i "$clip" "$@" \
        "$work/$name.webm"; } 2>&1 ) || { echo "encode failed: $t" >&2; exit 1; }
  awk '{printf "%.2f %.2f\n", $1, $2 + $3}' <<<"$t"
}
# Wall time is what the presenter waits for; CPU time is what the build changes. Both are the
# BEST of the runs: on a shared box load only ever slows a run down (same binary, same clip:
# 5.6 s to 21 s seen under load), and libvpx's realtime mode adapts its effort to the clock.
# The goal (<= 1.0x, with 2 % measurement tolerance) is judged on CPU time.
printf '%-38s %7s %7s %6s %7s %7s %6s %7s %7s\n' "WebM encode of 30 s 640x360 (best of $RUNS)" \
  "lab s" "deb s" "wall" "lab cpu" "deb cpu" "cpu" "lab RTF" "deb RTF"
while IFS='|' read -r label args; do
  : > "$work/lab.t"; : > "$work/deb.t"
  for _ in $(seq "$RUNS"); do  # interleaved, so a load change on the shared box hits both
    # shellcheck disable=SC2086
    one "$ffmpeg_lab" lab $args >> "$work/lab.t"
    # shellcheck disable=SC2086
    one /usr/bin/ffmpeg debian $args >> "$work/deb.t"
  done
  lab=$(cut -d' ' -f1 "$work/lab.t" | best); deb_s=$(cut -d' ' -f1 "$work/deb.t" | best)
  labc=$(cut -d' ' -f2 "$work/lab.t" | best); debc=$(cut -d' ' -f2 "$work/deb.t" | best)
  awk -v l="$lab" -v d="$deb_s" -v lc="$labc" -v dc="$debc" -v n="$label" 'BEGIN{
    printf "%-38s %7.2f %7.2f %5.2fx %7.2f %7.2f %5.2fx %6.1fx %6.1fx%s\n", n, l, d, l/d, lc, dc, lc/dc,
      30/l, 30/d, (lc/dc<=1.02?"":"  (goal <= 1.0x missed)")}'
done <<'LIST'
VP8 realtime cpu-used 8 + Vorbis|-c:v libvpx -deadline realtime -cpu-used 8 -b:v 1M -c:a libvorbis -q:a 4
VP9 realtime cpu-used 8 row-mt + Opus|-c:v libvpx-vp9 -deadline realtime -cpu-used 8 -row-mt 1 -b:v 1M -c:a libopus -b:a 96k
LIST
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
