"""Reading ansible-playbook's output: the per-host recap and the tasks that changed."""

from __future__ import annotations

import re

RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def changed_counts(output: str) -> dict[str, int]:
    """host -> changed=N of the PLAY RECAP."""
    return {m[0]: int(m[2]) for m in RECAP.findall(output)}


def changed_tasks(output: str) -> list[str]:
    """'TASK [...] -> changed: [host] ...' for every change, in order."""
    tasks, current = [], ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            current = line
        elif line.startswith("changed:"):
            tasks.append(f"{current} -> {line[:140]}")
    return tasks
