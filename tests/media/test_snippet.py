"""lab-snippet under a real Xvfb with real xclip and a real dmenu chooser (typed with xdotool)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import LAB_SNIPPET, REPO, load_talk, run

# The hotkey events are the talk's (talk/talk.yml, or TALK=path): lab-snippet reads them in the
# format `demolab-talk events` writes (presenter_kit writes the same events, from talk_data).
TALK_FILE = Path(os.environ.get("DEMOLAB_TALK") or REPO / "talk/talk.yml")
TALK = load_talk(TALK_FILE)
SNIPPETS = {name: ev["snippet"] for name, ev in TALK.events().items() if "snippet" in ev}
# Two more, for what the talk does not exercise: a command only (run for real here, unlike the
# talk's `lab-record start`) and a non-ASCII snippet together with a command.
EXTRA_EVENTS = """\
touchit:
  description: run a command only
  command: touch "$MARKER_DIR/ran-$LAB_SNIPPET_EVENT"
both:
  snippet: "x = 'héllo'  # unicode, quotes"
  command: echo both > "$MARKER_DIR/both"
"""


@pytest.fixture
def snippet_env(tmp_path, xvfb) -> dict:
    events = tmp_path / "events.yml"
    made = run([sys.executable, "-m", "demolab_talk", "events", TALK_FILE],
               env=dict(os.environ, PYTHONPATH=str(REPO / "roles/talk/files")))
    events.write_text(made.stdout + EXTRA_EVENTS)
    markers = tmp_path / "markers"
    markers.mkdir()
    return dict(os.environ, DISPLAY=xvfb, LAB_SNIPPET_EVENTS=str(events), MARKER_DIR=str(markers),
                XDG_CACHE_HOME=str(tmp_path / "cache"), LAB_SNIPPET_BEEP=f"touch {markers}/beeped")


def clipboard(env, selection="clipboard") -> str:
    return run(["xclip", "-selection", selection, "-o"], env=env, timeout=10).stdout


def wait_for(path: Path, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def type_into_chooser(env, letters: str, missing: str) -> None:
    """Wait for the dmenu window to map, then type like the presenter would, and Enter."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = run(["xdotool", "search", "--onlyvisible", "--class", "dmenu"], env=env, timeout=10, check=False)
        if found.returncode == 0 and found.stdout.strip():
            break
        time.sleep(0.1)
    else:
        pytest.fail(missing)
    time.sleep(0.3)
    run(["xdotool", "type", "--delay", "40", letters], env=env, timeout=10)
    run(["xdotool", "key", "Return"], env=env, timeout=10)


def snippet(args, env, timeout=30, check=True):
    return run([LAB_SNIPPET, *args], env=env, timeout=timeout, check=check)


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_run_puts_the_talks_exact_snippet_on_clipboard(snippet_env, name):
    """Every event of the talk with a snippet: the clipboard holds it byte for byte."""
    res = snippet(["run", name], snippet_env)
    assert "snippet copied" in res.stdout
    assert clipboard(snippet_env) == SNIPPETS[name]
    assert wait_for(Path(snippet_env["MARKER_DIR"]) / "beeped")


def test_run_unicode_snippet_and_command(snippet_env):
    snippet(["run", "both"], snippet_env)
    assert clipboard(snippet_env) == "x = 'héllo'  # unicode, quotes"
    assert wait_for(Path(snippet_env["MARKER_DIR"]) / "both")


def test_run_command_only(snippet_env):
    res = snippet(["run", "touchit"], snippet_env)
    assert "command started" in res.stdout
    assert wait_for(Path(snippet_env["MARKER_DIR"]) / "ran-touchit")


def test_chooser_type_letters_and_enter(snippet_env):
    env = snippet_env
    proc = subprocess.Popen([str(LAB_SNIPPET), "choose"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        type_into_chooser(env, "mongo", "the chooser window never appeared")
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, err
    assert out.startswith("mongoinstall:")
    assert clipboard(env) == SNIPPETS["mongoinstall"]


def test_chooser_escape_cancels(snippet_env):
    env = snippet_env
    proc = subprocess.Popen([str(LAB_SNIPPET), "choose"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        run(["xdotool", "key", "Escape"], env=env, timeout=10)
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 4


def test_list_prints_table(snippet_env):
    lines = snippet(["list"], snippet_env).stdout.splitlines()
    assert lines[0].split() == ["NAME", "ACTION", "DESCRIPTION"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    talk = {name: "+".join(k for k in ("snippet", "command") if k in ev) for name, ev in TALK.events().items()}
    assert rows == {**talk, "touchit": "command", "both": "snippet+command"}


def test_unknown_event(snippet_env):
    res = snippet(["run", "redsi"], snippet_env, check=False)
    assert res.returncode == 1 and "unknown event 'redsi'" in res.stderr and "redis" in res.stderr


@pytest.mark.parametrize("text, line, words", [
    ("ok:\n  snippet: a\nbad:\n  snippet: b\n   command: c\n", 5, "malformed YAML"),
    ("ok:\n  snippet: a\nbad:\n  snippet: [unclosed\n", 5, "opened at line 4"),
    ("ok:\n  snippet: a\nbad:\n  snipet: typo\n", 4, "unknown key 'snipet'"),
    ("ok:\n  snippet: a\nempty:\n  description: nothing to do\n", 3, "neither a snippet nor a command"),
    ("- a\n- b\n", 1, "expected a mapping"),
    ("ok:\n  snippet: a\nok:\n  snippet: b\n", 3, "defined twice"),
    ("ok: just a string\n", 1, "must be a mapping"),
])
def test_malformed_events_file_names_the_line(tmp_path, snippet_env, text, line, words):
    bad = tmp_path / "bad.yml"
    bad.write_text(text)
    res = snippet(["--events", bad, "list"], snippet_env, check=False)
    assert res.returncode == 1
    assert f"{bad}:{line}:" in res.stderr and words in res.stderr, res.stderr


def test_no_display_is_a_clear_error(snippet_env):
    env = dict(snippet_env)
    env.pop("DISPLAY")
    res = snippet(["run", "redis"], env, check=False)
    assert res.returncode == 1 and "no DISPLAY" in res.stderr


def test_hotkey_via_xbindkeys_opens_chooser(snippet_env, tmp_path):
    """The binding the role writes (Mod4 + space -> lab-snippet choose), pressed for real."""
    env = snippet_env
    rc = tmp_path / "xbindkeysrc"
    rc.write_text(f'"{LAB_SNIPPET} --events {env["LAB_SNIPPET_EVENTS"]} choose"\n  Mod4 + space\n')
    subprocess.run(["xclip", "-selection", "clipboard", "-in"], input=b"cleared", env=env, timeout=10,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    xbk = subprocess.Popen(["xbindkeys", "-n", "-f", str(rc)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(1.0)
        run(["xdotool", "key", "super+space"], env=env, timeout=10)
        type_into_chooser(env, "redis", "the hotkey did not open the chooser")
        end = time.monotonic() + 10
        while time.monotonic() < end:
            got = run(["xclip", "-selection", "clipboard", "-o"], env=env, timeout=10, check=False).stdout
            if got == SNIPPETS["redis"]:
                break
            time.sleep(0.1)
        assert got == SNIPPETS["redis"]
    finally:
        os.killpg(xbk.pid, 9)
        xbk.wait(5)


GNOME_HELPER = LAB_SNIPPET.with_name("lab-gnome-keybinding")
GNOME_SCHEMA = "org.gnome.settings-daemon.plugins.media-keys"
GNOME_PATH = f"{GNOME_SCHEMA}.custom-keybinding:/org/gnome/settings-daemon/plugins/media-keys/custom-keybindings/" \
             "demolab-snippet/"


def test_gnome_keybinding_is_set_once_and_read_back(tmp_path):
    """The GNOME branch: real gsettings + dconf on a private session bus, run twice (idempotent),
    values with both kinds of quotes read back exactly."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "DBUS_SESSION_BUS_ADDRESS"}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_RUNTIME_DIR=str(runtime))
    command = """/usr/local/bin/lab-snippet --events "/home/it's me/events.yml" --beep 'paplay x' choose"""

    def helper(cmd):
        return run([GNOME_HELPER, "demolab-snippet", "demolab snippet launcher", cmd, "<Super>space"], env=env,
                   timeout=30).stdout.strip()

    assert helper(command) == "changed"
    assert helper(command) == "unchanged"
    got = run(["dbus-run-session", "--", "sh", "-c", f"gsettings get {GNOME_SCHEMA} custom-keybindings; "
               f"for k in name command binding; do gsettings get {GNOME_PATH} $k; done"], env=env,
              timeout=30).stdout.splitlines()
    assert got[0] == "['/org/gnome/settings-daemon/plugins/media-keys/custom-keybindings/demolab-snippet/']"
    assert got[1:] == ["'demolab snippet launcher'", '"' + command.replace('"', '\\"') + '"', "'<Super>space'"]
    assert helper("lab-snippet choose") == "changed"
    assert (tmp_path / "config/dconf/user").exists()
