"""The layout a newcomer reads in one step (issue 11): one manifest reader, one way for a role to
declare that it uses `lab`, the tested Ansible version in every role's meta, a README that
starts with what the role provides and its main knob, and `make help` listing every target."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = sorted(p for p in (REPO / "roles").iterdir() if (p / "meta" / "main.yml").exists())
FILTER = REPO / "plugins" / "filter" / "demolab_manifest.py"


def load_filter():
    spec = importlib.util.spec_from_file_location("demolab_manifest", FILTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_filter_reads_entries_without_comments_or_blanks():
    manifest = load_filter().demolab_manifest
    text = ("# a heading comment\n\nredis-server\n  ffmpeg  # the lab's own is built too\n"
            "\t\n#commented-out\nhttps://example.invalid/a#fragment-is-a-comment-here\r\nxclip")
    assert manifest(text) == ["redis-server", "ffmpeg", "https://example.invalid/a", "xclip"]
    assert manifest("") == [] and manifest("# only\n  # comments\n") == []


def test_manifest_filter_refuses_what_is_not_a_manifest_text():
    module = load_filter()
    with pytest.raises(TypeError, match="manifest's text"):
        module.demolab_manifest(["already", "a", "list"])
    assert module.FilterModule().filters() == {"demolab_manifest": module.demolab_manifest}


def test_every_play_sees_the_filter_and_lab_manifest_dir(tmp_path):
    """Through ansible.cfg, as the playbooks run: lab_manifest_dir is the repo's mirror/ and the
    filter reads its manifests exactly as the Python function does."""
    play, result_file = tmp_path / "play.yml", tmp_path / "result.json"
    read = "lookup('ansible.builtin.file', lab_manifest_dir ~ '/{}') | demolab_manifest"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [
            {"ansible.builtin.import_role": {"name": "lab", "tasks_from": "settings"}},
            {"name": "Write what the play sees", "ansible.builtin.copy": {
                "dest": str(result_file), "mode": "0644",
                "content": "{{ {'dir': lab_manifest_dir, 'apt': %s, 'urls': %s} | to_json }}"
                           % (read.format("apt-packages.txt"), read.format("urls.txt"))}},
        ]}]))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    cmd = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-e", f"ansible_python_interpreter={sys.executable}",
           str(play)]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert Path(result["dir"]).resolve() == REPO / "mirror"
    manifest = load_filter().demolab_manifest
    assert result["apt"] == manifest((REPO / "mirror" / "apt-packages.txt").read_text())
    assert len(result["apt"]) > 10
    assert result["urls"] == manifest((REPO / "mirror" / "urls.txt").read_text())


def yaml_sources() -> list[Path]:
    return sorted([*(REPO / "roles").rglob("*.yml"), *(REPO / "playbooks").rglob("*.yml")])


def test_manifests_are_read_only_through_the_filter_and_lab_manifest_dir():
    for path in yaml_sources():
        text = path.read_text()
        where = path.relative_to(REPO)
        assert ".splitlines()" not in text, f"{where}: read a manifest with | demolab_manifest"
        assert "regex_replace', '#" not in text, f"{where}: read a manifest with | demolab_manifest"
        assert not re.search(r"\.\./(\.\./)?mirror\b", text), f"{where}: name a manifest through lab_manifest_dir"
    defining = [p for p in yaml_sources() if re.search(r"^lab_manifest_dir:", p.read_text(), re.M)]
    assert defining == [REPO / "roles" / "lab" / "defaults" / "main.yml"]


def lab_entry_points(role: Path) -> set[str]:
    """tasks_from of every include_role/import_role of `lab` in the role's tasks and handlers."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key.split(".")[-1] in ("include_role", "import_role") and isinstance(value, dict) \
                        and value.get("name") == "lab":
                    found.add(value.get("tasks_from", "main"))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for sub in ("tasks", "handlers"):
        for path in (role / sub).glob("*.yml"):
            walk(yaml.safe_load(path.read_text()))
    return found


def uses_lab_settings(role: Path) -> bool:
    """Whether the role reads one of lab's settings (lab_*, not an entry point's parameter)."""
    setting = re.compile(r"\blab_(?!service_|remote_|secret_name\b|secret\b)[a-z_]+")
    return any(setting.search(p.read_text()) for sub in ("tasks", "handlers", "defaults", "vars", "templates")
               for p in (role / sub).glob("*") if p.is_file())


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_meta_declares_the_tested_ansible_and_its_use_of_lab(role: Path):
    text = (role / "meta" / "main.yml").read_text()
    meta = yaml.safe_load(text)
    assert meta["galaxy_info"]["min_ansible_version"] == "2.19"  # the version the tests run
    assert meta["galaxy_info"]["role_name"] == role.name
    assert meta["dependencies"] == [], "roles use lab through include_role, not meta dependencies"
    if role.name == "lab":
        return
    declared = re.search(r"^# Uses role `lab`: (.*)$", text, re.M)
    assert declared, f"{role.name}/meta/main.yml: no '# Uses role `lab`: ...' line"
    used = lab_entry_points(role)
    if used:
        listed = re.match(r"include_role tasks_from ([a-z_, ]+?), and its settings", declared.group(1))
        assert listed, declared.group(1)
        assert set(listed.group(1).split(", ")) == used
    elif declared.group(1).startswith("its settings"):
        assert uses_lab_settings(role), f"{role.name} declares lab's settings but reads none"
    else:
        assert declared.group(1) == "nothing." and not uses_lab_settings(role)


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_readme_starts_with_what_it_provides_and_its_main_variable(role: Path):
    lines = (role / "README.md").read_text().splitlines()
    assert lines[0] == f"# Role `{role.name}`"
    assert lines[1] == ""
    lead = lines[2:lines.index("", 2)]
    assert 2 <= len(lead) <= 4, lead
    assert lead[0].startswith("Provides "), lead[0]
    lead_text = " ".join(lead)
    assert "most likely to" in lead_text
    knob = re.search(r"\*\*`([a-z0-9_]+)`\*\*", lead_text)
    assert knob, f"{role.name}: the lead names no **`variable`**"
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    assert knob.group(1) in defaults


def phony_targets() -> list[str]:
    text = (REPO / "Makefile").read_text().replace("\\\n", " ")
    phony = re.search(r"^\.PHONY:(.*)$", text, re.M)
    return phony.group(1).split()


def test_every_target_has_a_help_line_and_make_help_prints_it():
    makefile = (REPO / "Makefile").read_text()
    targets = phony_targets()
    assert {"help", "lab", "test", "quick", "bundle", "rehearse"} <= set(targets)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
    shown = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "help"], env=env,
                           capture_output=True, text=True, timeout=60, check=True).stdout
    default = subprocess.run(["make", "--no-print-directory", "-C", str(REPO)], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    assert default == shown  # help is the default goal
    assert "SHELL" not in shown and ":=" not in shown
    rows = {}
    for line in shown.splitlines()[1:]:
        names, _, doc = line.strip().partition("  ")
        assert doc.strip(), f"no description: {line!r}"
        for name in names.split():
            assert name not in rows, f"{name} listed twice"
            rows[name] = doc.strip()
    for target in targets:
        assert re.search(rf"^(\S+ )*{re.escape(target)}( \S+)*:[^=\n]*## \S", makefile, re.M), \
            f"{target}: no '## ...' on its target line"
        assert target in rows, f"make help does not list {target}"
    assert set(rows) == set(targets), f"listed but not .PHONY: {set(rows) - set(targets)}"
