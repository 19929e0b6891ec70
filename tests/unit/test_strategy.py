"""The lab's strategy (plugins/strategy/demolab_linear.py, chosen in ansible.cfg).

Through Mitogen, one Python process on the host runs every task's module, so two tasks' commands
have the same parent; without Mitogen (hidden here as on the Vagrant VM's bare Ansible) every
task starts its own, and the play still runs.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PLAY = """\
- name: Two tasks, each telling which process ran its module
  hosts: localhost
  gather_facts: false
  tasks:
    - name: First
      ansible.builtin.command: sh -c 'echo $PPID'
      register: first
      changed_when: false
    - name: Second
      ansible.builtin.command: sh -c 'echo $PPID'
      register: second
      changed_when: false
    - name: Tell
      ansible.builtin.debug:
        msg: "module parents {{ first.stdout }} {{ second.stdout }}"
"""


def module_parents(tmp_path: Path, **env: str) -> tuple[str, str, str]:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-vv", str(play)],
                          env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1", **env),
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    m = re.search(r"module parents (\d+) (\d+)", proc.stdout)
    assert m, proc.stdout[-2000:]
    return m[1], m[2], proc.stdout + proc.stderr


def test_tasks_share_one_interpreter_through_mitogen(tmp_path):
    first, second, out = module_parents(tmp_path)
    assert first == second, "each task started its own Python: the play did not run through Mitogen"
    assert "Mitogen is not installed" not in out


def test_plain_linear_where_mitogen_is_absent(tmp_path):
    hidden = tmp_path / "hide" / "ansible_mitogen"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('hidden by the test: a controller without Mitogen')\n")
    first, second, out = module_parents(tmp_path, PYTHONPATH=str(tmp_path / "hide"))
    assert first != second
    assert "Mitogen is not installed here, plain linear strategy" in out
