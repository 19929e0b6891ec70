"""The talk on a lab host: installed and valid, and the presenter's shell provides everything
the talk's `requires` names (environment, aliases, commands) and they work."""

from __future__ import annotations

import json
import shlex

import pytest

TALK_DIR = "/etc/demolab/talk"  # roles/talk/files/demolab_talk/paths.py: TALK_DIR


@pytest.fixture(scope="module")
def talk(host) -> dict:
    raw = host.file(f"{TALK_DIR}/talk.json")
    assert raw.exists, f"{TALK_DIR}/talk.json missing: the talk role did not run"
    return json.loads(raw.content_string)


def presenter(host) -> str:
    """The presenter, found as roles/presenter_kit's default finds it: the inventory's
    presenter_kit_user, else the user who became root (SUDO_USER: `vagrant` on the Vagrant VM),
    else the connection's user."""
    return (host.ansible.get_variables().get("presenter_kit_user")
            or host.run("printenv SUDO_USER").stdout.strip() or host.user().name)


def presenter_shell(host, script: str):
    """What the presenter gets: an interactive bash (~/.bashrc with the demolab block)."""
    if "presenter" not in host.ansible.get_variables().get("group_names", []):
        pytest.skip("not a presenter host: no presenter shell settings here")
    user = presenter(host)
    return host.run(f"su - {shlex.quote(user)} -c {shlex.quote('bash -ic ' + shlex.quote(script))}")


def test_the_talk_is_installed_and_valid(host, talk):
    assert talk["path"] == f"{TALK_DIR}/talk.yml"
    out = host.run("demolab-talk check")
    assert out.rc == 0, out.stderr
    assert out.stdout.strip() == f"{TALK_DIR}/talk.yml: {len(talk['steps'])} steps, ok"
    for rel in talk["files"]:
        assert host.file(f"{TALK_DIR}/{rel}").is_file, rel
    assert json.loads(host.check_output("demolab-talk json"))["steps"] == talk["steps"]


def test_the_rehearsal_can_record_casts(host):
    assert host.run("asciinema --version").rc == 0


def test_the_shell_provides_what_the_talk_requires(host, talk):
    req = talk["requires"]
    checks = [f'echo "env {v}=${{{v}:+set}}"' for v in req["env"]]
    checks += [f'alias {a} >/dev/null 2>&1 && echo "alias {a}=set"' for a in req["aliases"]]
    checks += [f'command -v {c} >/dev/null && echo "command {c}=set"' for c in req["commands"]]
    out = presenter_shell(host, "; ".join(checks)).stdout
    have = {line.split("=")[0] for line in out.splitlines() if line.endswith("=set")}
    want = {f"env {v}" for v in req["env"]} | {f"alias {a}" for a in req["aliases"]} \
        | {f"command {c}" for c in req["commands"]}
    assert want <= have, f"the presenter's shell lacks {sorted(want - have)}"


def test_ipython_alias_runs_the_demo_apps_ipython(host):
    out = presenter_shell(host, "ipython -c 'import bson, sys; print(6 * 7, sys.prefix)'")
    assert out.rc == 0, out.stderr
    assert out.stdout.split()[:2] == ["42", "/opt/demolab/demo-app"]


def test_redis_cli_authenticates_from_a_private_file(host):
    out = presenter_shell(host, 'redis-cli ping; stat -c "%a %U" "$HOME/.config/demolab/secrets/redis"')
    lines = out.stdout.split("\n")
    assert lines[0] == "PONG", out.stdout + out.stderr
    assert lines[1] == f"600 {presenter(host)}"


def test_lab_play_is_installed_and_knows_the_talk(host, talk):
    """lab-play reads the installed talk: an unknown step is refused naming the real ones."""
    if "presenter" not in host.ansible.get_variables().get("group_names", []):
        pytest.skip("not a presenter host: lab-play is a presenter tool")
    assert host.run("lab-play --help").rc == 0
    out = host.run("lab-play --step no-such-step")
    assert out.rc == 1
    assert "no-such-step" in out.stderr and talk["steps"][0]["id"] in out.stderr, out.stderr
