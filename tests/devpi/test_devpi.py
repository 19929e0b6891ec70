"""devpi as the lab's PyPI mirror: a real devpi-server on loopback, filled by the role's tool
(roles/devpi/files/demolab_devpi.py) from hashed locks, then used by pip in offline mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import MIRROR_LOCK, TARGET, DevpiServer, Upstream, clean_pip_env, result, sha256, write_lock


def lock_targets(lock: Path) -> list[str]:
    """The targets a lock was made for (its `# Targets:` line), TARGET for the tests' own locks."""
    for line in lock.read_text().splitlines():
        if line.startswith("# Targets: "):
            return line.removeprefix("# Targets: ").split()
    return [TARGET]


def fill(devpi, lock: Path, store: Path, env, *extra: str, popen: bool = False):
    """As the role runs it: pip downloads through devpi's own root/pypi (whose upstream is
    the loopback stand-in for PyPI), for every target the lock was made for (the role: one per
    devpi_fill_targets entry)."""
    targets = [arg for target in lock_targets(lock) for arg in ("--target", target)]
    return devpi.tool("fill", "--lock", str(lock), "--store", str(store), *targets,
                      "--pip-index-url", f"{devpi.url}/root/pypi/+simple/", *extra, env=env,
                      popen=popen)


def pip_install(devpi_venv: Path, tmp_path: Path, index_url: str, *reqs: str):
    """pip into a FRESH venv, nothing but the given index (machine pip config ignored)."""
    venv = tmp_path / f"venv-{time.monotonic_ns()}"
    subprocess.run([str(devpi_venv / "bin" / "python"), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    started = time.monotonic()
    proc = subprocess.run([str(devpi_venv / "bin" / "python"), "-m", "pip", "--python",
                           str(venv / "bin" / "python"), "install", "--index-url", index_url,
                           *reqs], env=clean_pip_env(), capture_output=True, text=True,
                          check=False, timeout=120)
    return proc, time.monotonic() - started, venv


def test_setup_is_idempotent_and_sets_no_project_list(devpi, upstream):
    again = devpi.tool("setup", "--mirror-url", upstream.url)
    assert again.returncode == 0, again.stderr
    assert result(again)["changed"] is False
    req = urllib.request.Request(devpi.url + "/root/pypi", headers={"Accept": "application/json"})
    with urllib.request.urlopen(req) as resp:
        pypi = json.load(resp)["result"]
    assert pypi["mirror_no_project_list"] is True
    req = urllib.request.Request(devpi.url + "/lab/offline", headers={"Accept": "application/json"})
    with urllib.request.urlopen(req) as resp:
        assert json.load(resp)["result"]["bases"] == ["root/pypi"]


def test_fill_is_idempotent_and_pip_installs_offline(devpi, devpi_venv, wheels, tmp_path,
                                                      pip_env):
    lock = write_lock(tmp_path / "small.lock",
                      [wheels["demolab-alpha"], wheels["demolab-beta"], wheels["demolab-gamma"]])
    store = tmp_path / "store"
    started = time.monotonic()
    first = fill(devpi, lock, store, pip_env)
    fill_seconds = time.monotonic() - started
    assert first.returncode == 0, first.stderr
    assert result(first)["changed"] is True
    assert set(devpi.index_files()) == {w.name for k, w in wheels.items() if k != "demolab-delta"}

    second = fill(devpi, lock, store, pip_env)
    assert second.returncode == 0, second.stderr
    assert result(second)["changed"] is False, second.stdout
    assert "download" not in second.stderr
    check = fill(devpi, lock, store, pip_env, "--check")
    assert result(check)["changed"] is False

    devpi.restart(offline=True)
    index_url = f"{devpi.url}/lab/offline/+simple/"
    proc, seconds, venv = pip_install(devpi_venv, tmp_path, index_url, "demolab-alpha",
                                      "demolab-gamma==2.0")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import demolab_alpha, demolab_beta, demolab_gamma; "
                          "print(demolab_alpha.VERSION, demolab_gamma.VERSION)"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1.0", "2.0"]
    print(f"\nfill {fill_seconds:.1f}s; offline pip install (3 wheels) {seconds:.1f}s")

    # a package the lock never cached: offline devpi answers at once, pip says which one
    proc, seconds, _ = pip_install(devpi_venv, tmp_path, index_url, "demolab-delta")
    assert proc.returncode != 0
    assert "No matching distribution found for demolab-delta" in proc.stdout + proc.stderr
    assert seconds < 20, f"an uncached package took {seconds:.1f}s to fail"


def test_wrong_hash_is_refused_naming_the_package(devpi, wheels, tmp_path, pip_env):
    lock = write_lock(tmp_path / "bad.lock", [wheels["demolab-alpha"], wheels["demolab-beta"]],
                      wrong="demolab-beta")
    store = tmp_path / "store"
    proc = fill(devpi, lock, store, pip_env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "hash mismatch" in proc.stderr
    assert "demolab-beta==1.0" in proc.stderr
    assert "demolab-beta==1.0" in result(proc)["msg"] or "hash mismatch" in result(proc)["msg"]
    assert "demolab-alpha==1.0:" not in proc.stderr  # only the bad one is named as bad
    assert not (store / "manifest.json").exists()
    assert devpi.index_files() == {}


def test_killed_upload_then_rerun_completes(devpi, devpi_venv, bulk_wheels, tmp_path, pip_env):
    lock = write_lock(tmp_path / "bulk.lock", bulk_wheels)
    store = tmp_path / "store"
    want = {w.name: w for w in bulk_wheels}
    proc = fill(devpi, lock, store, pip_env, popen=True)
    killed_with = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (store / "manifest.json").exists():
            have = devpi.index_files()
            if 0 < len(have) < len(want):
                os.killpg(proc.pid, signal.SIGKILL)  # the tool AND its `devpi upload`
                killed_with = len(have)
                break
        time.sleep(0.02)
    proc.wait(30)
    proc.stdout.close()
    proc.stderr.close()
    assert killed_with is not None, "the upload finished before it could be killed"

    rerun = fill(devpi, lock, store, pip_env)
    assert rerun.returncode == 0, rerun.stderr
    assert "download" not in rerun.stderr  # the store was complete: upload only
    have = devpi.index_files()
    assert set(have) == set(want)
    for name, digest in have.items():
        assert digest == sha256(want[name]), name
    assert result(fill(devpi, lock, store, pip_env))["changed"] is False

    # the index is intact: everything installs with the lock's hashes enforced
    venv = tmp_path / "venv"
    subprocess.run([str(devpi_venv / "bin" / "python"), "-m", "venv", "--without-pip", str(venv)],
                   check=True)
    inst = subprocess.run([str(devpi_venv / "bin" / "python"), "-m", "pip", "--python",
                           str(venv / "bin" / "python"), "install", "--require-hashes",
                           "--index-url", f"{devpi.url}/lab/offline/+simple/", "-r", str(lock)],
                          env=clean_pip_env(), capture_output=True, text=True, check=False)
    assert inst.returncode == 0, inst.stdout + inst.stderr


def test_killed_download_then_rerun_completes(devpi, bulk_wheels, tmp_path, pip_env):
    lock = write_lock(tmp_path / "bulk.lock", bulk_wheels)
    store = tmp_path / "store"
    proc = fill(devpi, lock, store, pip_env, popen=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        staged = list((store / ".download").glob("*/*.whl")) if store.exists() else []
        if staged:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(30)
    proc.stdout.close()
    proc.stderr.close()
    assert not (store / "manifest.json").exists()
    rerun = fill(devpi, lock, store, pip_env)
    assert rerun.returncode == 0, rerun.stderr
    assert len(devpi.index_files()) == len(bulk_wheels)


def test_offline_fill_uploads_from_a_complete_store(devpi, devpi_venv, wheels, tmp_path,
                                                    pip_env, upstream, serverdir_template):
    lock = write_lock(tmp_path / "small.lock", [wheels["demolab-alpha"], wheels["demolab-beta"]])
    store = tmp_path / "store"
    assert fill(devpi, lock, store, pip_env).returncode == 0

    # a second, fresh lab machine at the venue: offline devpi, the store carried over
    other = DevpiServer(devpi_venv, tmp_path / "other-serverdir", devpi.password,
                        template=serverdir_template)
    other.start(offline=True)
    try:
        setup = other.tool("setup", "--mirror-url", upstream.url,
                           clientdir=tmp_path / "other-client")
        assert setup.returncode == 0, setup.stderr
        no_net = clean_pip_env(PIP_INDEX_URL="http://127.0.0.1:9/simple/")  # nothing listens
        proc = other.tool("fill", "--lock", str(lock), "--store", str(store), "--target", TARGET,
                          "--offline", env=no_net, clientdir=tmp_path / "other-client")
        assert proc.returncode == 0, proc.stderr
        assert result(proc)["changed"] is True
        assert set(other.index_files()) == {wheels["demolab-alpha"].name,
                                            wheels["demolab-beta"].name}
        # offline with an incomplete store: refused with the reason, no download attempt
        empty = other.tool("fill", "--lock", str(lock), "--store", str(tmp_path / "empty"),
                           "--target", TARGET, "--offline", env=no_net,
                           clientdir=tmp_path / "other-client")
        assert empty.returncode == 2
        assert "fill it online first" in empty.stderr
    finally:
        other.stop()


def fresh_venv(devpi_venv: Path, path: Path) -> Path:
    """A fresh venv of the lab hosts' Python (the one devpi's venv was made from)."""
    subprocess.run([str(devpi_venv / "bin" / "python"), "-m", "venv", "--without-pip", str(path)],
                   check=True)
    return path


def pip_into(devpi_venv: Path, venv: Path, *args: str, timeout: int = 300):
    return subprocess.run([str(devpi_venv / "bin" / "python"), "-m", "pip", "--python",
                           str(venv / "bin" / "python"), "install", "--no-cache-dir", *args],
                          env=clean_pip_env(), capture_output=True, text=True, check=False,
                          timeout=timeout)


def test_real_lock_fills_and_installs_offline_with_hashes(devpi, devpi_venv, real_wheels,
                                                          tmp_path, pip_env):
    """mirror/requirements.lock (demo app + SecantusDB): fill, go offline, install the lock
    with its hashes enforced into a fresh venv, import the demo's stack."""
    store = tmp_path / "store"
    started = time.monotonic()
    proc = fill(devpi, MIRROR_LOCK, store, pip_env)
    fill_seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr
    have = devpi.index_files()
    assert set(have) == {w.name for w in real_wheels}
    assert all(have[w.name] == sha256(w) for w in real_wheels)
    manifest = json.loads((store / "manifest.json").read_text())
    assert set(manifest["files"]) == set(have)

    devpi.restart(offline=True)
    index_url = f"{devpi.url}/lab/offline/+simple/"
    venv = fresh_venv(devpi_venv, tmp_path / "venv")
    started = time.monotonic()
    inst = pip_into(devpi_venv, venv, "--require-hashes", "--only-binary=:all:",
                    "--index-url", index_url, "-r", str(MIRROR_LOCK))
    install_seconds = time.monotonic() - started
    assert inst.returncode == 0, inst.stdout + inst.stderr
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import gevent, pyramid, socketio, engineio, simple_websocket, redis, pymongo, "
         "numpy, shapely, secantus; print('ok')"],
        capture_output=True, text=True, check=False)
    assert check.stdout.strip() == "ok", check.stderr
    print(f"\nreal lock: {len(have)} files; fill {fill_seconds:.1f}s; offline "
          f"pip install --require-hashes {install_seconds:.1f}s")

    # not in the lock, so never cached: offline devpi answers at once, pip names it
    started = time.monotonic()
    miss = pip_into(devpi_venv, fresh_venv(devpi_venv, tmp_path / "venv2"),
                    "--index-url", index_url, "demolab-delta==1.0", timeout=60)
    seconds = time.monotonic() - started
    assert miss.returncode != 0
    assert "No matching distribution found for demolab-delta" in miss.stdout + miss.stderr
    assert seconds < 20, f"an uncached package took {seconds:.1f}s to fail"


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MiB tmpfs (root only): the store fills up while filling."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "demolab-test", str(mnt)],
                   check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_while_filling_is_clear_and_nothing_half_written(devpi, bulk_wheels, tmp_path,
                                                                    pip_env, small_disk):
    lock = write_lock(tmp_path / "bulk.lock", bulk_wheels)  # 16 x 3 MB > 8 MiB
    store = small_disk / "store"
    proc = fill(devpi, lock, store, pip_env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "disk full" in proc.stderr
    assert "disk full" in result(proc)["msg"]
    assert str(store) in result(proc)["msg"]
    assert not (store / "manifest.json").exists()
    assert sorted(p.name for p in store.iterdir() if p.name.startswith(".")) == []
    for wheel in store.glob("*.whl"):  # only whole files with the lock's hash, if any
        assert sha256(wheel) == sha256(next(w for w in bulk_wheels if w.name == wheel.name))
    assert devpi.index_files() == {}

    # room again: the rerun completes from where it stopped
    subprocess.run(["mount", "-o", "remount,size=128m", str(small_disk)], check=True)
    rerun = fill(devpi, lock, store, pip_env)
    assert rerun.returncode == 0, rerun.stderr
    have = devpi.index_files()
    assert set(have) == {w.name for w in bulk_wheels}
    assert all(have[w.name] == sha256(w) for w in bulk_wheels)


def test_passing_upstream_fault_is_retried(devpi, wheels, tmp_path, pip_env, monkeypatch):
    """The index answers 502 for one wheel twice (pip gives up at once): the fill tries
    the download again after a pause and completes, saying why it waited."""
    flaky = Upstream(tmp_path / "flaky", list(wheels.values()), fail={wheels["demolab-gamma"].name: 2})
    try:
        lock = write_lock(tmp_path / "flaky.lock", [wheels["demolab-beta"], wheels["demolab-gamma"]])
        env = dict(pip_env, DEMOLAB_DEVPI_RETRY_PAUSE="1")
        done = devpi.tool("fill", "--lock", str(lock), "--store", str(tmp_path / "store"), "--target", TARGET,
                          "--pip-index-url", flaky.url, env=env)
        assert done.returncode == 0, done.stderr
        assert "502" in done.stderr and "trying again" in done.stderr
        assert flaky.failures[wheels["demolab-gamma"].name] == 0
        assert len(devpi.index_files()) == 2
    finally:
        flaky.close()


def test_persistent_upstream_fault_is_a_clear_failure(devpi, wheels, tmp_path, pip_env):
    flaky = Upstream(tmp_path / "broken", list(wheels.values()), fail={wheels["demolab-beta"].name: 1000})
    try:
        lock = write_lock(tmp_path / "broken.lock", [wheels["demolab-beta"]])
        env = dict(pip_env, DEMOLAB_DEVPI_RETRY_PAUSE="0.2")
        done = devpi.tool("fill", "--lock", str(lock), "--store", str(tmp_path / "store"), "--target", TARGET,
                          "--pip-index-url", flaky.url, env=env)
        assert done.returncode == 2
        assert "pip download failed" in done.stderr and "502" in done.stderr
        assert "attempt 3 of 3" in done.stderr
        assert not (tmp_path / "store" / "manifest.json").exists()
    finally:
        flaky.close()
