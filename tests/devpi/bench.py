"""Benchmark: `pip install` of the demo lock (mirror/requirements.lock) from devpi in offline
mode vs `--no-index --find-links` on the same wheels, each into a fresh venv, hashes enforced,
no pip cache. Runs alternate (devpi, find-links, devpi, ...); medians and their ratio are
printed from this one run (goal: devpi <= 1.2x the find-links floor).

    bash tests/devpi/bench.sh [--runs 3]

Needs DEVPI_TEST_VENV and DEVPI_TEST_WHEELS (tests/devpi/run.sh builds both; bench.sh calls
it with DEVPI_PREPARE_ONLY=1). Loopback only: a stand-in for PyPI serves the cached wheels.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import MIRROR_LOCK, TARGET, DevpiServer, Upstream, clean_pip_env  # noqa: E402

GOAL = 1.2


def timed_install(devpi_venv: Path, work: Path, *source: str) -> float:
    venv = Path(tempfile.mkdtemp(prefix="venv-", dir=work))
    subprocess.run([str(devpi_venv / "bin" / "python"), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    cmd = [str(devpi_venv / "bin" / "python"), "-m", "pip", "--python", str(venv / "bin" / "python"),
           "install", "-q", "--no-cache-dir", "--require-hashes", "--only-binary=:all:", *source,
           "-r", str(MIRROR_LOCK)]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=clean_pip_env(), capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(source)} failed:\n{proc.stdout}{proc.stderr}")
    shutil.rmtree(venv)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="installs per method (default 3)")
    args = parser.parse_args()
    devpi_venv = Path(os.environ["DEVPI_TEST_VENV"])
    wheels = Path(os.environ["DEVPI_TEST_WHEELS"])
    files = sorted(wheels.glob("*.whl"))
    with tempfile.TemporaryDirectory(prefix="devpi-bench-") as tmp:
        work = Path(tmp)
        upstream = Upstream(work / "upstream", files)
        devpi = DevpiServer(devpi_venv, work / "serverdir", "bench-root-secret").start()
        try:
            for step in (["setup", "--mirror-url", upstream.url],
                         ["fill", "--lock", str(MIRROR_LOCK), "--store", str(work / "store"),
                          "--target", TARGET, "--pip-index-url",
                          f"{devpi.url}/root/pypi/+simple/"]):
                proc = devpi.tool(*step)
                if proc.returncode != 0:
                    raise SystemExit(f"bench: {step[0]} failed:\n{proc.stderr}")
            upstream.close()
            devpi.restart(offline=True)
            index = ["--index-url", f"{devpi.url}/lab/offline/+simple/"]
            local = ["--no-index", "--find-links", str(work / "store")]
            timed_install(devpi_venv, work, *index)  # warm-up: page cache, devpi's own caches
            results: dict[str, list[float]] = {"devpi": [], "find-links": []}
            for _ in range(args.runs):
                results["devpi"].append(timed_install(devpi_venv, work, *index))
                results["find-links"].append(timed_install(devpi_venv, work, *local))
        finally:
            devpi.stop()
    med = {name: statistics.median(values) for name, values in results.items()}
    ratio = med["devpi"] / med["find-links"]
    print(f"pip install of mirror/requirements.lock ({len(files)} wheels, fresh venv, "
          f"--require-hashes, no cache), {args.runs} runs each:")
    for name, values in results.items():
        print(f"  {name:11s} median {med[name]:5.2f}s  runs "
              + " ".join(f"{v:.2f}" for v in values))
    verdict = "ok" if ratio <= GOAL else "ABOVE GOAL"
    print(f"ratio devpi offline / find-links = {ratio:.2f}x (goal <= {GOAL}x): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
