"""The talk file: the shipped talk is valid and fits this lab; a broken talk file is one line
naming the file, the line and the step, from the model, from demolab-talk, from mirror/lock.py
and from ansible-playbook (which stops before anything changes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "roles" / "talk" / "files"))

from demolab_talk import TalkError, load  # noqa: E402

TALK_FILE = Path(os.environ.get("DEMOLAB_TALK") or REPO / "talk" / "talk.yml")
SHIPPED = REPO / "talk" / "talk.yml"
URL_RE = re.compile(r"https?://[^\s'\"<>)]+")


@pytest.fixture(scope="module")
def talk():
    return load(TALK_FILE)


# -- the shipped talk ---------------------------------------------------------------------------
def test_the_shipped_talk_keeps_the_original_events_and_yasnippets():
    talk = load(SHIPPED)
    assert {"redis", "gevent", "mongoinstall", "socketio", "manage", "flot", "record",
            "stoprecord"} <= set(talk.events())
    keys = {(y.mode, y.key) for y in talk.yasnippets()}
    assert {("python-mode", "objectid"), ("python-mode", "dataapp"), ("html-mode", "socketio")} <= keys
    assert talk.events()["record"]["command"] == "lab-record start"
    assert talk.events()["stoprecord"]["command"] == "lab-record stop"
    objectid = next(y for y in talk.yasnippets() if y.key == "objectid")
    assert "from bson import ObjectId" in objectid.body  # pymongo.objectid is long gone
    dataapp = next(y for y in talk.yasnippets() if y.key == "dataapp")
    assert "conditional_response=True" in dataapp.body and "etag" in dataapp.body
    assert talk.step("upload").risky


def test_the_shipped_talk_has_none_of_the_four_bugs():
    text = SHIPPED.read_text() + "".join((SHIPPED.parent / f).read_text() for f in load(SHIPPED).files)
    assert ":6543" not in text  # the app is on 8080
    assert "REDIS_PASSWORD" not in text  # nothing sets it: REDISCLI_AUTH does
    assert "/static/js/" not in text  # the app serves /static/socket.io.min.js
    assert "demo-app/venv" not in text


def test_every_step_with_a_command_says_what_it_must_show(talk):
    for step in talk.steps:
        if step.command:
            assert step.expect and (step.expect.output or step.expect.url), step.id


def lab_ports() -> set[int]:
    """The loopback ports of the lab's services (the lab's endpoints, its role's defaults)."""
    lab = yaml.safe_load((REPO / "roles" / "lab" / "defaults" / "main.yml").read_text())
    return {int(lab[key]) for key in ("lab_demo_app_port", "lab_proxy_port", "lab_devpi_port", "lab_apt_mirror_port")}


def test_every_url_is_lab_local_and_exists_in_the_demo_app(talk):
    """Replayable offline: the demo app (its routes, its static files) or another loopback
    URL; whatever the talk opens from elsewhere must be recorded (needs.urls)."""
    static = {p.name for p in (REPO / "demo-app/src/demolab_app/static").iterdir()}
    static |= set(re.findall(r"\$\(STATIC\)/([\w.-]+)", (REPO / "demo-app/Makefile").read_text()))
    routes = set(re.findall(r'add_route\("\w+", "(/[^"{]*)', (REPO / "demo-app/src/demolab_app/app.py").read_text()))
    routes.add("/socket.io/")  # socketio.WSGIApp in front of Pyramid (its default path)
    recorded = set(talk.needs().urls)
    for step in talk.steps:
        urls = [u for u in (step.open, step.expect.url if step.expect else None) if u]
        for text in (step.command or "", step.hotkey.snippet or "" if step.hotkey else "",
                     step.hotkey.run or "" if step.hotkey else ""):
            urls += URL_RE.findall(text)
            # $DEMO_URL (presenter_kit_demo_url: the demo app) followed by a literal path
            urls += ["http://127.0.0.1:8080" + m for m in re.findall(r"\$DEMO_URL(/[\w./-]*)", text)]
        for url in urls + step.needs.urls:
            host, port = re.match(r"https?://([^/:]+)(?::(\d+))?", url).groups()
            assert host in ("127.0.0.1", "localhost") or url in recorded, f"{step.id}: {url}"
            if host in ("127.0.0.1", "localhost"):
                assert int(port or 80) in lab_ports(), f"{step.id}: {url}: no lab service on port {port}"
            if url.startswith("http://127.0.0.1:8080"):
                path = url[len("http://127.0.0.1:8080"):].split("?")[0] or "/"
                if path.startswith("/static/"):
                    assert path[len("/static/"):] in static, f"{step.id}: the app has no {path}"
                else:
                    assert path in routes, f"{step.id}: the app has no route {path}"
    demo_port = yaml.safe_load((REPO / "roles/demo_app/defaults/main.yml").read_text())["demo_app_port"]
    assert demo_port == "{{ lab_demo_app_port }}" and 8080 in lab_ports()  # the app is the lab's on 8080


def test_the_shell_provides_what_the_talk_requires(talk):
    """Declared once, in the presenter's shell settings (presenter_kit's presenter.sh)."""
    sh = (REPO / "roles/presenter_kit/templates/presenter.sh.j2").read_text()
    ffmpeg_profile = (REPO / "roles/ffmpeg/templates").glob("*.j2")
    exported = set(re.findall(r"\bexport ([A-Z_][A-Z0-9_]*)=", sh))
    exported |= set(re.findall(r"\b([A-Z_][A-Z0-9_]*)=.*&& export \1\b", sh))
    exported |= {v for f in ffmpeg_profile for v in re.findall(r"^export ([A-Z_]+)=", f.read_text(), re.M)}
    assert set(talk.requires.env) <= exported, set(talk.requires.env) - exported
    for alias in talk.requires.aliases:
        assert re.search(rf"^\s*alias {alias}=", sh, re.M), alias
    venv = yaml.safe_load((REPO / "roles/presenter_kit/defaults/main.yml").read_text())["presenter_kit_demo_venv"]
    demo = yaml.safe_load((REPO / "roles/demo_app/defaults/main.yml").read_text())
    assert venv == demo["demo_app_venv"]  # the ipython alias points at the real venv ...
    assert any(p.lower().startswith("ipython==") for p in demo["demo_app_ipython_packages"])  # ... with IPython


def test_no_talk_content_in_presenter_kit_defaults():
    defaults = yaml.safe_load((REPO / "roles/presenter_kit/defaults/main.yml").read_text())
    assert "talk_data" in defaults["presenter_kit_events"]
    assert "talk_data" in defaults["presenter_kit_emacs_snippets"]
    text = (REPO / "roles/presenter_kit/defaults/main.yml").read_text()
    for word in ("snippet:", "socket.io", "redis-server", "yasnippet body", "# key:"):
        assert word not in text, word


def test_cli_events_round_trip(tmp_path, talk):
    out = subprocess.run([sys.executable, "-m", "demolab_talk", "events", str(TALK_FILE)], capture_output=True,
                         text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO / "roles/talk/files")))
    assert yaml.safe_load(out.stdout) == talk.events()


# -- bad input: one line, file:line, the step ---------------------------------------------------
GOOD_STEP = "  - id: intro\n    title: Hello\n    notes: hi\n"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "talk.yml"
    path.write_text(body)
    return path


BAD = {
    "duplicate step id": ("title: T\nsteps:\n" + GOOD_STEP + "  - id: intro\n    title: Again\n    notes: x\n",
                          6, "intro", "duplicate step id (first defined at line 3)"),
    "unknown key": ("title: T\nsteps:\n" + GOOD_STEP + "  - id: redis\n    title: R\n    snipet: x\n",
                    8, "redis", "unknown key 'snipet'"),
    "missing snippet file": ("title: T\nsteps:\n" + GOOD_STEP + "  - id: manage\n    title: M\n    hotkey:\n"
                             "      name: manage\n      snippet_file: snippets/nope.py\n",
                             10, "manage", "snippet_file 'snippets/nope.py' does not exist"),
    "bad YAML": ("title: T\nsteps:\n" + GOOD_STEP + "  - id: x\n    title: [unclosed\n    notes: y\n",
                 8, None, "malformed YAML"),
    "snippet file outside the talk": ("title: T\nsteps:\n  - id: leak\n    title: L\n    hotkey:\n      name: leak\n"
                                      "      snippet_file: ../etc/passwd\n", 7, "leak", "inside the talk's directory"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_talk_is_one_line_naming_file_line_and_step(tmp_path, case):
    body, line, step, words = BAD[case]
    path = write(tmp_path, body)
    with pytest.raises(TalkError) as err:
        load(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}:{line}:"), msg
    if step:
        assert f"step {step!r}:" in msg, msg
    assert words in msg, msg


def test_cli_exits_1_with_the_line(tmp_path):
    path = write(tmp_path, BAD["unknown key"][0])
    res = subprocess.run([sys.executable, "-m", "demolab_talk", "check", str(path)], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO / "roles/talk/files")))
    assert res.returncode == 1 and res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"demolab-talk: {path}:8: step 'redis': unknown key 'snipet'")


def test_lock_refuses_a_bad_talk_before_downloading(tmp_path):
    path = write(tmp_path, BAD["duplicate step id"][0])
    out = tmp_path / "requirements.lock"
    res = subprocess.run([sys.executable, str(REPO / "mirror/lock.py"), str(REPO / "mirror/requirements.in"),
                          "--talk", str(path), "-o", str(out), "--pip", "/bin/false"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and not out.exists()
    assert f"{path}:6: step 'intro': duplicate step id" in res.stderr


def ansible_playbook(tmp: Path, playbook: str, *args: str, talk: Path) -> subprocess.CompletedProcess:
    inv = tmp / "inventory.ini"
    inv.write_text("[lab]\nlocalhost ansible_connection=local\n[presenter]\nlocalhost ansible_connection=local\n"
                   "[all:vars]\nansible_python_interpreter=/usr/bin/python3\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", DEMOLAB_TALK=str(talk),
               PATH=f"{BIN}:{os.environ['PATH']}")
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), playbook, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case", ["duplicate step id", "missing snippet file"])
def test_site_yml_stops_on_a_bad_talk_before_anything(tmp_path, case):
    """make lab TALK=bad.yml: the controller-side load is the first thing that runs; the play
    stops with the model's one line, nothing changed, no later task ran."""
    body, line, step, words = BAD[case]
    path = write(tmp_path, body)
    res = ansible_playbook(tmp_path, "playbooks/site.yml", "--check", "-e", f"lab_secrets_dir={tmp_path}/secrets",
                           talk=path)
    text = res.stdout + res.stderr
    assert res.returncode != 0
    line_out = next((x for x in text.splitlines() if f"demolab-talk: {path}:{line}: step '{step}':" in x), "")
    assert words in line_out, text[-3000:]
    recap = [x for x in res.stdout.splitlines() if x.startswith("localhost")][-1]
    assert "changed=0" in recap and "failed=1" in recap, recap
    tasks = re.findall(r"^TASK \[([^\]]+)\]", res.stdout, re.M)
    assert tasks[-1].endswith("Stop on a talk file with an error"), tasks
    assert not any(t.startswith(("lab :", "apt_mirror", "Unpack", "Point apt")) for t in tasks), tasks
    assert not (tmp_path / "secrets").exists()


def test_the_talk_role_stops_before_changing_anything(tmp_path):
    """A real (not check-mode) run of the talk role with a broken talk: nothing is installed."""
    path = write(tmp_path, BAD["bad YAML"][0])
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{"name": "Talk", "hosts": "lab", "gather_facts": False,
                                     "roles": [{"role": "talk"}]}]))
    dest = tmp_path / "etc-talk"
    res = ansible_playbook(tmp_path, str(play), "-e", f"lab_talk_dir={dest}", "-e",
                           f"talk_lib_dir={tmp_path}/lib", "-e", f"talk_bin_path={tmp_path}/demolab-talk",
                           "-e", f"talk_play_bin_path={tmp_path}/lab-play",
                           "-e", '{"talk_packages": []}', talk=path)
    text = res.stdout + res.stderr
    assert res.returncode != 0
    assert f"demolab-talk: {path}:8: malformed YAML" in text, text[-3000:]
    assert not dest.exists() and not (tmp_path / "lib").exists() and not (tmp_path / "demolab-talk").exists()
    assert not (tmp_path / "lab-play").exists()
