"""Bad input fails early, with a message that says what is wrong and what to do.

These run the real playbooks (ansible-playbook) against this machine in check mode, or
against an address where nothing listens; nothing is changed on the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def playbook(*args: str, inventory: str = "localhost ansible_connection=local", tmp: Path,
             playbook_path: str = "playbooks/site.yml") -> subprocess.CompletedProcess:
    inv = tmp / "inventory.ini"
    inv.write_text(f"[lab]\n{inventory}\n[presenter]\n{inventory}\n[all:vars]\n"
                   "ansible_python_interpreter=/usr/bin/python3\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), playbook_path, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_unknown_mongodb_engine_is_refused_before_any_change(tmp_path):
    out = playbook("--check", "--tags", "mongodb_install", "-e", "mongodb_engine=mongo-bogus",
                   "-e", f"lab_secrets_dir={tmp_path}/secrets", tmp=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "mongodb_engine" in text and "mongo-bogus" in text
    assert "secantus" in text and "mongodb-org" in text  # says what is allowed


def test_unreachable_inventory_host_is_named(tmp_path):
    t0 = time.monotonic()
    out = playbook(inventory="ghost ansible_host=127.0.0.1 ansible_port=1 ansible_user=root",
                   tmp=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "Cannot reach ghost (127.0.0.1)" in text
    assert "inventory" in text
    assert time.monotonic() - t0 < 60


def test_missing_secret_is_an_error_when_generation_is_off(tmp_path):
    secrets = tmp_path / "secrets"
    out = playbook("--check", "--tags", "redis_configure", "-e", f"lab_secrets_dir={secrets}",
                   "-e", "lab_secrets_generate=false", tmp=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"{secrets}/localhost/redis does not exist" in text
    assert "lab_secrets_generate" in text
    assert not secrets.exists()  # nothing generated behind the user's back


def test_secret_is_generated_private_and_stable(tmp_path):
    secrets = tmp_path / "secrets"
    for _ in range(2):
        out = playbook("--check", "--tags", "redis_configure", "-e", f"lab_secrets_dir={secrets}",
                       tmp=tmp_path)
        assert out.returncode == 0, out.stdout[-3000:]
        path = secrets / "localhost" / "redis"
        value = path.read_text()
        assert (path.stat().st_mode & 0o777) == 0o600
        assert value not in out.stdout + out.stderr  # never printed
    assert len(value.split()[0]) == 32


def test_a_directory_that_is_not_a_bundle_is_refused(tmp_path):
    empty = tmp_path / "not-a-bundle"
    empty.mkdir()
    out = playbook("--check", "-e", f"bundle_dir={empty}", "-e", f"lab_store_dir={tmp_path}/store",
                   "-e", f"lab_secrets_dir={tmp_path}/secrets", tmp=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert f"{empty} is not a demolab bundle (no MANIFEST.json)" in text
    assert "make bundle DEST=" in text
    assert not (tmp_path / "store").exists()


def test_a_corrupt_bundle_part_is_named_and_nothing_is_unpacked(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "apt.tar").write_bytes(b"not the tar the manifest describes")
    (bundle / "MANIFEST.json").write_text(json.dumps({"format": 1, "parts": [
        {"name": "apt", "file": "apt.tar", "size": 34, "sha256": "0" * 64},
        {"name": "pypi", "file": "pypi.tar", "size": 1, "sha256": "1" * 64}]}))
    out = playbook("-e", f"bundle_dir={bundle}", "-e", f"lab_store_dir={tmp_path}/store",
                   "-e", f"lab_secrets_dir={tmp_path}/secrets", tmp=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "Bundle part apt" in text and "is corrupt (sha256" in text
    assert "Bundle part pypi" in text and "is missing" in text
    assert "nothing was unpacked" in text
    assert not (tmp_path / "store").exists()


def test_exporting_a_store_that_is_not_filled_says_what_to_run(tmp_path):
    dest = tmp_path / "bundle"
    out = playbook("-e", f"bundle_dir={dest}", "-e", f"lab_store_dir={tmp_path}/empty-store",
                   tmp=tmp_path, playbook_path="playbooks/bundle.yml")
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "has no apt, pypi, devpi-venv, ffmpeg, http_cache" in text
    assert "run `make lab` there while" in text
    assert not (dest / "MANIFEST.json").exists() and not list(dest.glob("*.tar"))


def test_audience_mode_on_loopback_is_refused_before_any_change(tmp_path):
    secrets = tmp_path / "secrets"
    out = playbook("--check", "--tags", "demo_app_install", "-e", "demo_app_audience=true",
                   "-e", f"lab_secrets_dir={secrets}", tmp=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "demo_app_audience_address is '127.0.0.1'" in text and "hotspot" in text
    assert "Install what the demo app needs" not in text  # refused before the first change
    assert not (secrets / "localhost" / "demo-app-upload-token").exists()


def test_audience_mode_on_the_mirrors_address_is_refused(tmp_path):
    out = playbook("--check", "--tags", "demo_app_install", "-e", "demo_app_audience=true",
                   "-e", "lab_mirror_address=10.78.9.1", "-e", f"lab_secrets_dir={tmp_path}/s",
                   tmp=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    assert "devpi and Debian mirror" in text and "10.78.9.1" in text


def test_audience_mode_on_its_own_address_passes_the_checks(tmp_path):
    out = playbook("--check", "--tags", "demo_app_install", "-e", "demo_app_audience=true",
                   "-e", "demo_app_audience_address=10.78.9.7", "-e",
                   f"lab_secrets_dir={tmp_path}/s", tmp=tmp_path)
    text = out.stdout + out.stderr
    assert "Keep the lab's mirrors away from the audience" in text
    assert "demo_app_audience_address is" not in text, text[-3000:]


@pytest.mark.parametrize("distribution,release,architecture", [
    ("Ubuntu", "24", "x86_64"),    # another distribution
    ("Debian", "11", "x86_64"),    # another release
    ("Debian", "13", "aarch64"),   # another architecture
])
def test_an_unsupported_system_is_refused_before_any_change(tmp_path, distribution, release,
                                                             architecture):
    facts = {"distribution": distribution, "distribution_major_version": release,
             "architecture": architecture}
    secrets = tmp_path / "secrets"
    # redis_configure generates its secret even in check mode: if the preflight let the run
    # through, the secrets directory would appear.
    out = playbook("--check", "--tags", "redis_configure", "-e", f"lab_secrets_dir={secrets}",
                   "-e", json.dumps({"lab_platform_facts": facts}), tmp=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    line = next(x for x in text.splitlines() if "demolab supports only" in x)
    assert f"localhost runs {distribution} {release} {architecture}" in line
    assert "Debian 12 (bookworm) amd64, Debian 13 (trixie) amd64" in line
    assert "TASK [redis" not in text  # no role ran
    assert not secrets.exists()


def test_a_cpu_below_x86_64_v2_is_refused_before_any_change(tmp_path):
    # QEMU's qemu64 model: no SSE4.1/4.2, no POPCNT (NumPy 2.4 dies there with SIGILL).
    flags = "fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 " \
            "syscall nx lm rep_good nopl cpuid pni cx16 x2apic hypervisor lahf_lm"
    secrets = tmp_path / "secrets"
    out = playbook("--check", "--tags", "redis_configure", "-e", f"lab_secrets_dir={secrets}",
                   "-e", json.dumps({"lab_cpu_flags": flags.split()}), tmp=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode != 0
    line = next(x for x in text.splitlines() if "(x86-64-v2)" in x)
    assert "localhost's CPU lacks popcnt, sse4_1, sse4_2, ssse3 (x86-64-v2)" in line
    assert "TASK [redis" not in text  # no role ran
    assert not secrets.exists()


def test_this_debian_machine_passes_the_preflight(tmp_path):
    # The real facts of this machine (Debian 12 amd64, like the CI runner): no override.
    out = playbook("--check", "--tags", "redis_configure", "-e", f"lab_secrets_dir={tmp_path}/s",
                   tmp=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "demolab supports only" not in out.stdout + out.stderr
