"""converge -> idempotence -> check mode -> verify -> the venue, on brand-new systemd hosts.

    python3 tests/lifecycle.py [--hosts lab1] [--first-index 11] [--no-offline] [--no-mirror-client]
                               [--no-bundle] [--no-debian13 | --only-debian13] [--reuse-ffmpeg] [--keep]

Boots fresh Debian 12 hosts (systemd as PID 1, no default route; their only way out is
the harness's forward proxy), runs playbooks/site.yml on them (online, as a fresh laptop:
the lab FFmpeg is built from source there unless --reuse-ffmpeg), runs it again and fails
unless it reports changed=0, runs it once more in check mode (changed=0 too), then runs
the testinfra suite against the inventory.  Then the venue: the forward proxy stops (no way
out at all), site.yml runs again with lab_mode=offline, from the lab's own mirrors only, and
the suite runs once more.  Before the venue, a brand-new Debian 13 (trixie) host converges
online too (its lab FFmpeg built from trixie's own source once, then reused from the
artifact cache), idempotence, verify.  The airplane rehearsal (playbooks/rehearse.yml) runs there: clean
with what was recorded, then with one unmirrored pip package, Debian package and URL, which
its miss report must name exactly.  Then a brand-new host with no way out at all is
provisioned over the lab network from the first host's mirrors alone (lab_mirror_host):
converge, idempotence, verify.  Last, `make bundle` exports that host's store and a
second brand-new host, with no way out at all, is provisioned only from the bundle:
converge, idempotence, verify, and the provisioning-time ratio against the first host's
online converge.  Prints how long each phase took.  The hosts are always torn down (also on
failure and Ctrl-C) unless --keep is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "harness"))

import labhosts  # noqa: E402
from recap import changed_counts, changed_tasks  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"


def ansible_env(secrets: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_NOCOLOR="1", DEMOLAB_SECRETS_DIR=str(secrets),
               PATH=f"{VENV_BIN}:{env.get('PATH', '')}")
    return env


# The first host provisions online as a fresh laptop does: it builds the lab FFmpeg from the
# Debian source package (the hosts after it install that artifact from its mirrors or its
# bundle). --reuse-ffmpeg installs the media suite's build instead (faster iterations; the
# provisioning ratios then leave the build out).
FFMPEG_CACHE = Path(os.environ.get("DEMOLAB_FFMPEG_CACHE", "/var/cache/demolab/ffmpeg"))
FFMPEG_ARTIFACTS: list[str] = []


# mirror/urls.txt's part in the test: a page the first host itself serves while it converges
# (its Debian mirror's Release file, on its lab-network address), recorded by the http_cache
# role while online; the rehearsal at the venue (replay only, never upstream) passes only if
# it was.
RECORD_URLS: list[str] = []


def playbook(inventory: Path, secrets: Path, *extra: str, log: Path) -> tuple[int, str]:
    return run_playbook("site.yml", inventory, secrets, *FFMPEG_ARTIFACTS, "-e",
                        json.dumps({"http_cache_record_urls": RECORD_URLS}), *extra, log=log)


def run_playbook(name: str, inventory: Path, secrets: Path, *extra: str, log: Path) -> tuple[int, str]:
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), str(REPO / "playbooks" / name),
           "-e", f"lab_secrets_dir={secrets}", *extra]
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=ansible_env(secrets), cwd=REPO)
        assert proc.stdout is not None
        text = []
        for line in proc.stdout:
            out.write(line)
            text.append(line)
            # Progress for a human: one line per task, and every failure in full.
            if line.startswith(("TASK [", "PLAY [", "RUNNING HANDLER")) or "fatal:" in line \
                    or line.startswith(("changed:", "failed:")) or "FAILED" in line:
                print("  " + line.rstrip()[:160], flush=True)
        rc = proc.wait()
    return rc, "".join(text)


def no_changes(what: str, inventory: Path, secrets: Path, *extra: str, log: Path,
               timings: list[tuple[str, float]]) -> list[str]:
    """Run site.yml once more (again, or in check mode): a failure unless it reports changed=0."""
    t = time.monotonic()
    rc, out = playbook(inventory, secrets, *extra, log=log)
    timings.append((what, time.monotonic() - t))
    changed = changed_counts(out)
    print(f"{what} recap: {changed}")
    if rc == 0 and changed and not any(changed.values()):
        return []
    for task in changed_tasks(out):
        print(f"  {what} changed: {task}")
    return [f"{what}: rc={rc} changed={changed}"]


def verified(what: str, inventory: Path, secrets: Path, timings: list[tuple[str, float]]) -> list[str]:
    """The testinfra suite against the inventory, timed: a failure unless it passes."""
    t = time.monotonic()
    rc = run_verify(inventory, secrets)
    timings.append((what, time.monotonic() - t))
    return [f"{what}: testinfra rc={rc}"] if rc != 0 else []


def run_verify(inventory: Path, secrets: Path) -> int:
    return subprocess.run(
        [str(VENV_BIN / "pytest"), "-q", str(REPO / "tests" / "infra"),
         "--hosts=ansible://lab", f"--ansible-inventory={inventory}", "-p", "no:cacheprovider"],
        env=ansible_env(secrets), cwd=REPO).returncode


# The page, the HTTPS page and the 20 MiB download the infra suite recorded while online
# (tests/infra/test_http_cache.py).
RECORDED = ["http://127.0.0.1:18931/rehearsal.txt", "https://localhost:18932/rehearsal-tls.txt",
            "http://127.0.0.1:18931/rehearsal-large.bin"]


def rehearse_phase(lab: labhosts.LabHosts, work: Path, inventory: Path, secrets: Path,
                   timings: list[tuple[str, float]]) -> list[str]:
    """make rehearse on the offline host: clean with what was recorded; then with one thing
    the mirrors lack of each kind, the miss report names exactly those three."""
    host = lab.hosts[0]
    t = time.monotonic()
    rc, out = run_playbook("rehearse.yml", inventory, secrets, "-e",
                           json.dumps({"rehearse_urls": RECORDED + RECORD_URLS}), log=work / "rehearse.log")
    timings.append(("rehearse", time.monotonic() - t))
    if rc != 0:
        print(out[-4000:])
        return [f"rehearsal with everything recorded: rc={rc}; log {work / 'rehearse.log'}"]
    missing = {"pip": "demolab-no-such-package==1.0", "apt": "demolab-no-such-package",
               "url": f"http://127.0.0.1:18931/never-recorded-{os.getpid()}.txt"}
    t = time.monotonic()
    rc, out = run_playbook("rehearse.yml", inventory, secrets, "-e", json.dumps(
        {"rehearse_urls": [*RECORDED, *RECORD_URLS, missing["url"]], "rehearse_pip": [missing["pip"]],
         "rehearse_apt": [missing["apt"]]}), log=work / "rehearse-misses.log")
    timings.append(("rehearse miss", time.monotonic() - t))
    report = json.loads(host.sh("cat /var/lib/demolab/rehearsal.json").stdout)
    got = sorted((m["kind"], m["what"]) for m in report["misses"])
    for step in report["steps"]:
        mark = "PASS" if step["ok"] else "FAIL"
        print(f"  rehearsal {mark} {step['step']:<6} {step['detail']} ({step['seconds']} s)")
    print(f"rehearsal miss report: {got}")
    if rc == 0 or got != sorted(missing.items()):
        return [f"rehearsal with three misses: rc={rc}, report {got}; log {work / 'rehearse-misses.log'}"]
    steps = {s["step"]: s["ok"] for s in report["steps"]}
    if not steps.get("demo"):
        return [f"rehearsal: the demo step failed: {report['steps']}"]
    return []


def bench_line(source: str, offline: float, online: float) -> None:
    how = ("the FFmpeg artifact reused (--reuse-ffmpeg)" if FFMPEG_ARTIFACTS
           else "FFmpeg built from source, as on a fresh laptop")
    print(f"\nbench: fresh host provisioned offline {source} {offline:.0f} s vs online {online:.0f} s "
          f"({how}) = {offline / online:.2f}x (goal <= 0.5x)")


def second_host(lab: labhosts.LabHosts, work: Path, secrets: Path, timings: list[tuple[str, float]], *,
                name: str, label: str, source: str, extra: tuple[str, ...],
                host_vars: dict[str, str] | None = None) -> tuple[labhosts.Host, list[str]]:
    """Boot one more brand-new host (no way out at all) and provision it offline from
    `source`: converge, idempotence, verify, and its provisioning-time ratio against the first
    host's online converge (goal <= 0.5x). Nothing comes from this controller's caches: the
    FFmpeg artifact too must come from `source`."""
    t = time.monotonic()
    host = lab.add(name)
    inv = lab.inventory(work / f"inventory-{name}.ini", hosts=[host], host_vars={name: host_vars or {}})
    timings.append((f"boot host {label}", time.monotonic() - t))
    extra = ("-e", "lab_mode=offline", "-e", "ffmpeg_artifact_source_dir=", *extra)
    t = time.monotonic()
    rc, out = playbook(inv, secrets, *extra, log=work / f"{name}-converge.log")
    timings.append((f"{label} converge", time.monotonic() - t))
    if rc != 0:
        print(out[-6000:])
        return host, [f"host {label} {source}: rc={rc}; full log: {work / f'{name}-converge.log'}"]
    failures = no_changes(f"{label} idempotence", inv, secrets, *extra, log=work / f"{name}-idempotence.log",
                          timings=timings)
    failures += verified(f"{label} verify", inv, secrets, timings)
    bench_line(source, dict(timings)[f"{label} converge"], dict(timings)["converge"])
    return host, failures


def mirror_client_phase(lab: labhosts.LabHosts, work: Path, secrets: Path,
                        timings: list[tuple[str, float]]) -> list[str]:
    """A brand-new host provisioned over the lab network solely from the first host's mirrors
    (lab_mirror_host): pip from its devpi, apt from its Debian mirror, the FFmpeg artifact from
    its store; its apt and pip sources must be that host's only."""
    mirror = lab.hosts[0]
    host, failures = second_host(lab, work, secrets, timings, name=f"{lab.hosts[0].name}-m", label="M",
                                 source=f"from {mirror.name}'s mirrors", extra=(),
                                 host_vars={"lab_mirror_host": mirror.ip})
    if failures:
        return failures
    apt = set(host.sh("apt-cache policy | grep -oE '(https?://|file:/)[^ ]+' | sort -u", check=False).stdout.split())
    pip = host.sh("sed -n 's/^index-url *= *//p' /etc/pip.conf", check=False).stdout.split()
    print(f"host M: apt's sources {sorted(apt)}, pip's index {pip}")
    if apt != {f"http://{mirror.ip}:3180/apt"} or pip != [f"http://{mirror.ip}:3141/lab/offline/+simple/"]:
        failures.append(f"host M: apt's sources {sorted(apt)} and pip's index {pip} must be {mirror.name}'s only")
    return failures


def debian13_phase(lab: labhosts.LabHosts, work: Path, secrets: Path, timings: list[tuple[str, float]],
                   name: str) -> list[str]:
    """A brand-new Debian 13 (trixie) host, online as a fresh laptop: converge, idempotence,
    verify. Its lab FFmpeg is built from trixie's own source package, once: the artifact (its
    key names the release) is kept in FFMPEG_CACHE/trixie and installed from there by later
    runs (a directory of its own: FFMPEG_CACHE/artifacts is what Debian 12 hosts take)."""
    lab.proxy.start()
    cache = FFMPEG_CACHE / "trixie"
    t = time.monotonic()
    host = lab.add(name, suite="trixie")
    inv = lab.inventory(work / f"inventory-{name}.ini", hosts=[host],
                        host_vars={name: {"lab_mirror_address": host.ip}})
    timings.append(("boot Debian 13 host", time.monotonic() - t))
    cached = [m.parent for m in cache.glob("artifacts/*/manifest.json")
              if json.loads(m.read_text()).get("release") == "trixie"]
    extra = ("-e", f"ffmpeg_artifact_source_dir={cache}") if cached else ()
    print(f"Debian 13 host {name}: lab FFmpeg " + (f"from the cached artifact {cached[0].name}" if cached
                                                   else "built from trixie's source (then cached)"))
    t = time.monotonic()
    rc, out = run_playbook("site.yml", inv, secrets, *extra, log=work / f"{name}-converge.log")
    timings.append(("Debian 13 converge", time.monotonic() - t))
    if not cached:  # also after a failure elsewhere: the build is the long part
        keep_ffmpeg_artifact(host, cache)
    if rc != 0:
        print(out[-6000:])
        return [f"Debian 13 host: converge rc={rc}; full log: {work / f'{name}-converge.log'}"]
    failures = []
    t = time.monotonic()
    rc, out = run_playbook("site.yml", inv, secrets, *extra, log=work / f"{name}-idempotence.log")
    timings.append(("Debian 13 idempotence", time.monotonic() - t))
    changed = changed_counts(out)
    print(f"Debian 13 idempotence recap: {changed}")
    if rc != 0 or not changed or any(changed.values()):
        failures.append(f"Debian 13 idempotence: rc={rc} changed={changed}; "
                        + "; ".join(changed_tasks(out)))
    failures += verified("Debian 13 verify", inv, secrets, timings)
    release = host.sh(". /etc/os-release; echo $VERSION_ID $(python3 -c 'import sys; print(sys.version[:4])')",
                      check=False).stdout.split()
    print(f"Debian 13 host: Debian {release[:1]}, Python {release[1:]}")
    if release[:1] != ["13"]:
        failures.append(f"the Debian 13 host runs Debian {release}")
    return failures


def keep_ffmpeg_artifact(host: labhosts.Host, cache: Path) -> None:
    """Copy the host's FFmpeg artifact (its store's current.json key) into CACHE/artifacts."""
    out = host.sh("cat /var/lib/demolab/mirror/ffmpeg/current.json", check=False)
    if out.returncode != 0:
        print(f"no FFmpeg artifact to keep on {host.name}: {out.stderr.strip()}")
        return
    key = json.loads(out.stdout)["key"]
    dest = cache / "artifacts" / key
    part = dest.with_name(key + ".part")
    shutil.rmtree(part, ignore_errors=True)
    part.mkdir(parents=True)
    tar = subprocess.Popen([*host.ssh_args, f"tar -C /var/lib/demolab/mirror/ffmpeg/artifacts/{key} -c ."],
                           stdout=subprocess.PIPE)
    subprocess.run(["tar", "-C", str(part), "-x"], stdin=tar.stdout, check=True)
    if tar.wait() == 0 and not dest.exists():
        part.rename(dest)
        print(f"kept the Debian 13 FFmpeg artifact in {dest}")
    shutil.rmtree(part, ignore_errors=True)


def bundle_phase(lab: labhosts.LabHosts, work: Path, inventory: Path, secrets: Path,
                 timings: list[tuple[str, float]]) -> list[str]:
    """make bundle of the first host's store, then a brand-new host provisioned only from it."""
    bundle = work / "bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    t = time.monotonic()
    rc, out = run_playbook("bundle.yml", inventory, secrets, "-e", f"bundle_dest={bundle}",
                           log=work / "bundle.log")
    timings.append(("make bundle", time.monotonic() - t))
    if rc != 0:
        print(out[-6000:])
        return [f"make bundle: rc={rc}; full log: {work / 'bundle.log'}"]
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file())
    print(f"bundle: {size / 2**20:.0f} MiB in {bundle}")
    _, failures = second_host(lab, work, secrets, timings, name=f"{lab.hosts[0].name}-b", label="B",
                              source="from a bundle", extra=("-e", f"lab_bundle_dir={bundle}"))
    return failures


def debian12_phases(a: argparse.Namespace, lab: labhosts.LabHosts, work: Path, inventory: Path, secrets: Path,
                    timings: list[tuple[str, float]]) -> list[str]:
    """The Debian 12 host and all that follows it (module docstring)."""
    failures: list[str] = []
    # Each host serves its mirrors on its lab-network address (other lab hosts use them).
    lab.inventory(inventory, host_vars={h.name: {"lab_mirror_address": h.ip} for h in lab.hosts})
    RECORD_URLS.append(f"http://{lab.hosts[0].ip}:3180/apt/Release")

    t = time.monotonic()
    rc, out = playbook(inventory, secrets, log=work / "converge.log")
    timings.append(("converge", time.monotonic() - t))
    if rc != 0:
        print(out[-6000:])
        raise SystemExit(f"converge failed (rc={rc}); full log: {work / 'converge.log'}")

    failures += no_changes("idempotence", inventory, secrets, log=work / "idempotence.log",
                           timings=timings)
    failures += no_changes("check mode", inventory, secrets, "--check", "--diff",
                           log=work / "check.log", timings=timings)

    failures += verified("verify", inventory, secrets, timings)

    if not a.no_debian13 and not failures:
        failures += debian13_phase(lab, work, secrets, timings, f"{a.hosts[0]}-13")

    if not a.no_offline and not failures:
        # The venue: the forward proxy is gone, so the hosts have no way out at all. The
        # same playbook in offline mode must converge from the lab's own mirrors.
        lab.proxy.stop()
        t = time.monotonic()
        rc, out = playbook(inventory, secrets, "-e", "lab_mode=offline", log=work / "offline.log")
        timings.append(("offline run", time.monotonic() - t))
        if rc != 0:
            print(out[-6000:])
            failures.append(f"offline run: rc={rc}; full log: {work / 'offline.log'}")
        else:
            failures += verified("offline verify", inventory, secrets, timings)

    if not a.no_offline and not failures:
        failures += rehearse_phase(lab, work, inventory, secrets, timings)

    if not a.no_offline and not a.no_mirror_client and not failures:
        failures += mirror_client_phase(lab, work, secrets, timings)

    if not a.no_offline and not a.no_bundle and not failures:
        failures += bundle_phase(lab, work, inventory, secrets, timings)
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", nargs="+", default=["lab1"])
    ap.add_argument("--first-index", type=int, default=11,
                    help="address of the first host: 10.77.0.N (pick another range beside a running suite)")
    ap.add_argument("--no-offline", action="store_true",
                    help="skip the venue phase (forward proxy stopped, lab_mode=offline, verify again)")
    ap.add_argument("--no-mirror-client", action="store_true",
                    help="skip the host provisioned over the lab network from the first host's mirrors")
    ap.add_argument("--no-bundle", action="store_true",
                    help="skip the second host provisioned from a bundle of the first (zero internet)")
    ap.add_argument("--no-debian13", action="store_true",
                    help="skip the Debian 13 host (converge, idempotence, verify)")
    ap.add_argument("--only-debian13", action="store_true",
                    help="only the Debian 13 host (no Debian 12 host)")
    ap.add_argument("--reuse-ffmpeg", action="store_true",
                    help=f"install the FFmpeg artifact from {FFMPEG_CACHE} on the first host instead of building it")
    ap.add_argument("--keep", action="store_true", help="leave the hosts running (debugging)")
    ap.add_argument("--workdir", default=str(REPO / ".run" / "lifecycle"))
    a = ap.parse_args()

    if a.reuse_ffmpeg:
        FFMPEG_ARTIFACTS.extend(["-e", f"ffmpeg_artifact_source_dir={FFMPEG_CACHE}"])
    work = Path(a.workdir).resolve()  # ansible resolves relative paths against the playbook
    work.mkdir(parents=True, exist_ok=True)
    secrets = work / "secrets"
    inventory = work / "inventory.ini"
    timings: list[tuple[str, float]] = []
    failures: list[str] = []

    lab = labhosts.LabHosts([] if a.only_debian13 else a.hosts, first_index=a.first_index)
    t = time.monotonic()
    try:
        lab.__enter__()
        timings.append(("boot", time.monotonic() - t))
        if a.only_debian13:
            failures += debian13_phase(lab, work, secrets, timings, f"{a.hosts[0]}-13")
        else:
            failures += debian12_phases(a, lab, work, inventory, secrets, timings)
    finally:
        lab.finish(a.keep, inventory, timings)
    return finish(failures)


def finish(failures: list[str]) -> int:
    if failures:
        print("\nFAILED: " + "; ".join(failures))
        return 1
    print("\nlifecycle: every phase passed (converge, idempotence (changed=0), check mode, verify, the "
          "Debian 13 host, the venue, the rehearsal, the host from the first host's mirrors, the host "
          "from a bundle; less what --no-* left out)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
