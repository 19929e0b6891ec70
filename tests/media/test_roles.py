"""The three roles: argument specs match defaults; a real apply on this machine is idempotent,
check-mode safe, installs the artifact without building, and the per-user changes are reversible."""

from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, STORE, load_talk, run

ROLES = ["talk", "ffmpeg", "screen_recording", "presenter_kit"]
USER = "demolab-ptest"
PLAYBOOK = REPO / "tests/media/playbook.yml"
TALK_FILE = Path(os.environ.get("DEMOLAB_TALK") or REPO / "talk/talk.yml")
TALK = load_talk(TALK_FILE)


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_match_defaults(role):
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())
    specs = yaml.safe_load((REPO / "roles" / role / "meta/argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options)
    assert all(k.startswith(role + "_") for k in defaults)
    readme = (REPO / "roles" / role / "README.md").read_text()
    missing = [k for k in defaults if k not in readme]
    assert not missing, f"README of {role} does not document {missing}"


def ansible_playbook() -> str:
    for cand in (os.environ.get("ANSIBLE_PLAYBOOK", ""), str(Path(sys.executable).with_name("ansible-playbook")),
                 str(REPO / ".venv/bin/ansible-playbook"), shutil.which("ansible-playbook") or ""):
        if cand and os.access(cand, os.X_OK):
            return cand
    pytest.skip("ansible-playbook not installed (tests/media/run.sh installs it)")


@pytest.fixture(scope="module")
def presenter():
    # A brand-new account each run: a home left by an interrupted run (its init files, its
    # snippets) would make the assertions about the presenter's files meaningless.
    remove_account()
    run(["useradd", "--create-home", "--shell", "/bin/bash", USER])
    yield USER
    remove_account()


def remove_account() -> None:
    """userdel refuses while the account has processes (xbindkeys, a chooser...): end them first."""
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return
    run(["pkill", "-KILL", "-u", USER], check=False)
    time.sleep(0.2)
    run(["userdel", "--remove", USER], check=False)


def apply(user, *extra, check=False):
    cmd = [ansible_playbook(), "-i", "localhost,", str(PLAYBOOK), "-e", "ansible_connection=local",
           "-e", "ansible_python_interpreter=/usr/bin/python3", "-e", f"ffmpeg_store_dir={STORE}",
           "-e", f"presenter_kit_user={user}", "-e", "presenter_kit_hotkey_backend=xbindkeys", *extra]
    if check:
        cmd.append("--check")
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(REPO / "roles"), ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               ANSIBLE_NOCOLOR="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, env=env,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    recap = [line for line in res.stdout.splitlines() if line.startswith("localhost")][-1]
    return res.stdout, recap


@pytest.fixture(scope="module")
def applied(artifact, presenter):
    first, _ = apply(presenter)
    return first


def test_apply_installs_artifact_without_building(applied, artifact):
    assert "Build and package FFmpeg" not in applied  # skipped tasks are not shown (ansible.cfg)
    out = run(["dpkg-query", "-W", "-f=${Version}", "demolab-ffmpeg"]).stdout
    assert out == artifact["package_version"]
    assert "5.1" in run([artifact["ffmpeg"], "-hide_banner", "-version"]).stdout


def test_second_run_changes_nothing(applied, presenter):
    _, recap = apply(presenter)
    assert "changed=0" in recap and "failed=0" in recap, recap


def test_check_mode_is_clean(applied, presenter):
    _, recap = apply(presenter, check=True)
    assert "changed=0" in recap and "failed=0" in recap, recap


def test_presenter_login_shell(applied, presenter, artifact):
    res = run(["su", "-", presenter, "-c", "bash -ic 'echo \"$FFMPEG|$PIP_INDEX_URL\"' 2>/dev/null"])
    ffmpeg, index = res.stdout.strip().splitlines()[-1].split("|")
    assert ffmpeg == artifact["ffmpeg"]
    assert index == "http://127.0.0.1:3141/lab/offline/+simple/"
    res = run(["su", "-", presenter, "-c", "bash -ic 'echo \"$DEMO_URL|$LAB_PROXY|$(alias ipython)\"' 2>/dev/null"])
    demo, proxy, alias = res.stdout.strip().splitlines()[-1].split("|")
    assert (demo, proxy) == ("http://127.0.0.1:8080", "http://127.0.0.1:8899")
    # the demo app's venv (roles/demo_app demo_app_venv), not .../demo-app/venv (not installed here)
    assert alias == "" or "/opt/demolab/demo-app/bin/python -m IPython" in alias


def test_installed_commands(applied, presenter):
    listing = run(["su", "-", presenter, "-c", "lab-snippet list"]).stdout
    assert listing.splitlines()[0].split() == ["NAME", "ACTION", "DESCRIPTION"] and "redis" in listing
    assert run(["/usr/local/bin/lab-record", "--help"]).returncode == 0
    ini = Path("/etc/demolab/lab-record.ini").read_text()
    assert "size = 1024x768" in ini and "fps = 12" in ini
    home = Path(pwd.getpwnam(presenter).pw_dir)
    xbk = (home / ".xbindkeysrc").read_text()
    assert "lab-snippet" in xbk and "Mod4 + space" in xbk


def test_emacs_settings_in_own_config(applied, presenter):
    home = Path(pwd.getpwnam(presenter).pw_dir)
    init = home / ".emacs.d/init.el"
    assert "DEMOLAB PRESENTER KIT" in init.read_text()
    el = (home / ".config/demolab/emacs/presenter.el").read_text()
    assert ":height 150" in el and "yas-global-mode" in el
    snippets = home / ".config/demolab/emacs/snippets"
    for y in TALK.yasnippets():
        text = (snippets / y.mode / y.key).read_text()
        assert text == f"# -*- mode: snippet -*-\n# name: {y.name}\n# key: {y.key}\n# --\n{y.body}"
    on_disk = sorted(str(f.relative_to(snippets)) for f in snippets.rglob("*") if f.is_file())
    assert on_disk == sorted(f"{y.mode}/{y.key}" for y in TALK.yasnippets())


def test_emacs_loads_font_and_talk_snippets(applied, presenter):
    """Real Emacs (emacs-nox, tests/apt/media.txt) reads the init file: face height and the
    talk's yasnippets in python-mode."""
    probe = ("(princ (format \"height=%s yas=%s keys=%s\" (face-attribute 'default :height) "
             "(bound-and-true-p yas-global-mode) (with-temp-buffer (python-mode) (yas-minor-mode 1) "
             "(sort (mapcar (function yas--template-key) (yas--all-templates (yas--get-snippet-tables))) "
             "(function string<)))))")
    res = run(["su", "-", presenter, "-c", f"emacs --batch -l ~/.emacs.d/init.el --eval {shlex.quote(probe)}"],
              timeout=120)
    keys = " ".join(sorted(y.key for y in TALK.yasnippets() if y.mode == "python-mode"))
    assert res.stdout.strip().endswith(f"height=150 yas=t keys=({keys})"), res.stdout + res.stderr


def test_installed_events_are_the_talks_and_reach_the_clipboard(applied, presenter, xvfb):
    """The events file the role wrote (from talk_data) is the talk's; run as the presenter, an
    event's snippet reaches the clipboard byte for byte."""
    home = Path(pwd.getpwnam(presenter).pw_dir)
    assert yaml.safe_load((home / ".config/demolab/events.yml").read_text()) == TALK.events()
    for name, event in TALK.events().items():
        if "snippet" not in event:
            continue
        run(["su", "-", presenter, "-c", f"DISPLAY={xvfb} LAB_SNIPPET_BEEP=none lab-snippet run {name}"])
        got = run(["xclip", "-selection", "clipboard", "-o"], env=dict(os.environ, DISPLAY=xvfb), timeout=10).stdout
        assert got == event["snippet"], name


def test_the_talk_is_installed(applied):
    """The talk role beside presenter_kit: talk.yml, its snippet files, talk.json, demolab-talk."""
    installed = Path("/etc/demolab/talk")
    assert (installed / "talk.yml").read_bytes() == TALK_FILE.read_bytes()
    for rel in TALK.files:
        assert (installed / rel).read_bytes() == (TALK_FILE.parent / rel).read_bytes()
    data = json.loads((installed / "talk.json").read_text())
    assert data["path"] == str(installed / "talk.yml") and data["events"] == TALK.events()
    assert [s["id"] for s in data["steps"]] == [s.id for s in TALK.steps]
    # As on the host: no DEMOLAB_TALK (the Makefile exports the repo's talk to its recipes).
    env = {k: v for k, v in os.environ.items() if k != "DEMOLAB_TALK"}
    out = run(["/usr/local/bin/demolab-talk", "check"], env=env).stdout
    assert out.strip() == f"{installed / 'talk.yml'}: {len(TALK.steps)} steps, ok"
    assert run(["asciinema", "--version"]).returncode == 0


def test_yasnippets_not_in_the_talk_are_removed(applied, presenter):
    home = Path(pwd.getpwnam(presenter).pw_dir)
    stale = home / ".config/demolab/emacs/snippets/python-mode/sioview"
    stale.write_text("# -*- mode: snippet -*-\n# key: sioev\n# --\nold talk\n")
    apply(presenter)
    assert not stale.exists()
    assert (home / ".config/demolab/emacs/snippets/python-mode/objectid").exists()


def test_offline_mode_proxy_and_emacs_removal(applied, presenter):
    """One run: lab_mode=offline (proxy appears) and emacs_state=absent (only our block goes)."""
    home = Path(pwd.getpwnam(presenter).pw_dir)
    init = home / ".emacs.d/init.el"
    init.write_text(";; my own\n(setq inhibit-startup-screen t)\n" + init.read_text())
    apply(presenter, "-e", "lab_mode=offline", "-e", "presenter_kit_emacs_state=absent")
    res = run(["su", "-", presenter, "-c", "bash -ic 'echo \"$http_proxy|$no_proxy\"' 2>/dev/null"])
    assert res.stdout.strip().splitlines()[-1] == "http://127.0.0.1:8899|127.0.0.1,localhost,::1"
    assert init.read_text() == ";; my own\n(setq inhibit-startup-screen t)\n"
    assert not (home / ".config/demolab/emacs").exists()


def test_shell_settings_removal(applied, presenter):
    home = Path(pwd.getpwnam(presenter).pw_dir)
    bashrc = (home / ".bashrc").read_text()
    assert "DEMOLAB PRESENTER KIT" in bashrc
    apply(presenter, "-e", "presenter_kit_shell_state=absent")
    after = (home / ".bashrc").read_text()
    assert "DEMOLAB" not in after and after.strip() and after in bashrc
    assert not (home / ".config/demolab/presenter.sh").exists()
    res = run(["su", "-", presenter, "-c", "bash -ic 'echo \"[$PIP_INDEX_URL]\"' 2>/dev/null"])
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_build_path_runs_async_and_takes_artifact_from_cache(applied, presenter, tmp_path, artifact):
    """An empty store: the role goes through the build branch (deps, deb-src, async `ensure`),
    which finds the artifact in ffmpeg_cache_dir instead of compiling."""
    store = tmp_path / "store"
    out, recap = apply(presenter, "-e", f"ffmpeg_store_dir={store}", "-e", f"ffmpeg_cache_dir={STORE}",
                       "-e", "ffmpeg_build_poll=2")
    assert "Build and package FFmpeg" in out and "failed=0" in recap
    copied = store / "artifacts" / artifact["key"]
    assert (copied / "manifest.json").exists() and (copied / "build.log").exists()
    assert (copied / Path(artifact["deb"]).name).read_bytes() == Path(artifact["deb"]).read_bytes()
