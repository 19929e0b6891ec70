"""The lab's play strategy: Ansible's own linear strategy, run through Mitogen when it is there.

Mitogen (a pinned dependency of the controller's venv) keeps one Python interpreter per host for
the whole run instead of starting a new one, and shipping a module zip, for every task.  The task
list, the modules and their results are Ansible's: only the transport changes.  Measured with
profile_tasks, a changed=0 `make lab` on a 2-core machine under load: 172 s with plain linear,
60 s through Mitogen (see tests/bench/rerun.py for the side-by-side run).

A controller without Mitogen (a bare `pip install ansible`; the Vagrant VM's ansible_local
installs both) runs plain linear, exactly as before: the name below works either way.
"""

from __future__ import annotations

from ansible.plugins.loader import strategy_loader
from ansible.utils.display import Display

try:  # Mitogen's loaders must be imported before its strategy mix-in.
    import ansible_mitogen.loaders  # noqa: F401
    import ansible_mitogen.planner as mitogen_planner
    import ansible_mitogen.strategy as mitogen_strategy
except ImportError:
    mitogen_strategy = None

# python-apt reads apt's settings once per process: run in Mitogen's warm interpreter, an apt
# task after the lab switched apt to its mirror (offline) still used the old sources ("Failed to
# update apt cache", tests/apt_mirror).  Mitogen's own remedy for modules with process-wide
# state is to run them in a fresh fork (as it does for dnf); the apt modules join that list.
APT_MODULES = frozenset(f"{prefix}{name}" for prefix in ("", "ansible.builtin.", "ansible.legacy.")
                        for name in ("apt", "apt_repository", "deb822_repository", "package_facts"))

Linear = strategy_loader.get("linear", class_only=True)

if mitogen_strategy is None:
    Display().vv("demolab_linear: Mitogen is not installed here, plain linear strategy")

    class StrategyModule(Linear):
        """Plain linear: no Mitogen on this controller."""

else:
    mitogen_planner.NewStylePlanner.ALWAYS_FORK_MODULES |= APT_MODULES

    class StrategyModule(mitogen_strategy.StrategyMixin, Linear):
        """Linear, with Mitogen's connection and per-host interpreter."""
