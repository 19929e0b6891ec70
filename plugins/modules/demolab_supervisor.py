#!/usr/bin/python3
"""Ansible module demolab_supervisor: one supervisord program loaded and in the wanted state.

Where PID 1 is not systemd the lab's services are supervisord programs. The lab used
`supervisorctl update NAME` (a command task) then community.general.supervisorctl, which
starts the `supervisorctl` program once or twice per service: ~0.35 s each, 2.1 s of a 31 s
changed=0 rerun of this project's six services (profile_tasks). This module asks supervisord
itself over its UNIX socket (the XML-RPC interface supervisorctl uses, Python's own
xmlrpc.client): one call per service, a few ms of work in it.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: demolab_supervisor
short_description: Load a supervisord program's definition and keep it started or stopped
description:
  - With I(reload), supervisord rereads its configuration and applies this program's
    definition (added, changed or removed), as C(supervisorctl update NAME) does; a program
    with autostart is then started by supervisord itself.
  - Then the program is brought to I(state); a program still starting counts as started.
  - Supports check mode (reports what it would do, changes nothing).
options:
  name:
    description: The program's name (its group has the same name).
    type: str
    required: true
  state:
    description: Whether the program runs.
    type: str
    choices: [started, stopped]
    default: started
  reload:
    description: The program's definition changed on disk; apply it first.
    type: bool
    default: false
  socket:
    description: supervisord's UNIX socket ([unix_http_server] file=).
    type: path
    required: true
author: demolab
"""

EXAMPLES = r"""
- name: Run the program
  demolab_supervisor:
    name: demolab-redis
    state: started
    reload: "{{ written is changed }}"
    socket: /var/run/supervisor.sock
"""

RETURN = r"""
statename:
  description: The program's state as supervisord reports it at the end (RUNNING, STARTING, STOPPED...).
  type: str
  returned: success
actions:
  description: What was done (or would be in check mode), in order.
  type: list
  elements: str
  returned: success
"""

# Fault codes of supervisor's XML-RPC interface (supervisor/xmlrpc.py, class Faults).
BAD_NAME = 10
ABNORMAL_TERMINATION = 40
SPAWN_ERROR = 50
ALREADY_STARTED = 60
NOT_RUNNING = 70
RUNNING_STATES = {"RUNNING", "STARTING", "BACKOFF"}


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self._path)


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host):  # noqa: ANN001, ANN201 - xmlrpc.client's signature
        return _UnixConnection(self._path)


def _info(server, name: str) -> dict | None:  # noqa: ANN001
    try:
        return server.supervisor.getProcessInfo(name)
    except xmlrpc.client.Fault as fault:
        if fault.faultCode == BAD_NAME:
            return None
        raise


def _apply_definition(server, name: str, actions: list[str]) -> None:  # noqa: ANN001
    """What `supervisorctl update NAME` does, for this one program group."""
    added, changed, removed = server.supervisor.reloadConfig()[0]
    if name in removed or name in changed:
        actions.append("stop and unload the old definition")
        server.supervisor.stopProcessGroup(name, True)
        server.supervisor.removeProcessGroup(name)
    if name in added or name in changed:
        actions.append("load the definition")
        server.supervisor.addProcessGroup(name)


def run(module: AnsibleModule) -> None:
    name, state = module.params["name"], module.params["state"]
    check = module.check_mode
    server = xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(module.params["socket"]))
    actions: list[str] = []
    if module.params["reload"] and check:
        # A preview did not write the definition: supervisord cannot tell what would change.
        module.exit_json(changed=True, actions=["apply the new definition", f"make it {state}"],
                         statename="")
    if module.params["reload"]:
        _apply_definition(server, name, actions)
    info = _info(server, name)
    if info is None:
        module.fail_json(msg=f"supervisord has no program {name}: is its definition in "
                             "supervisord's include directory, and was it loaded (reload)?")
    statename = info["statename"]
    if state == "started" and statename not in RUNNING_STATES:
        actions.append("start")
        if not check:
            try:
                server.supervisor.startProcess(name, True)
            except xmlrpc.client.Fault as fault:
                if fault.faultCode in (SPAWN_ERROR, ABNORMAL_TERMINATION):
                    module.fail_json(msg=f"{name} did not start ({fault.faultString}); its log "
                                         f"is {info.get('stdout_logfile') or 'in supervisord logs'}",
                                     actions=actions)
                if fault.faultCode != ALREADY_STARTED:  # autostart won the race: fine
                    raise
    elif state == "stopped" and statename in RUNNING_STATES:
        actions.append("stop")
        if not check:
            try:
                server.supervisor.stopProcess(name, True)
            except xmlrpc.client.Fault as fault:
                if fault.faultCode != NOT_RUNNING:
                    raise
    if actions and not check:
        statename = (_info(server, name) or {}).get("statename", "")
    module.exit_json(changed=bool(actions), actions=actions, statename=statename)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "name": {"type": "str", "required": True},
            "state": {"type": "str", "choices": ["started", "stopped"], "default": "started"},
            "reload": {"type": "bool", "default": False},
            "socket": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    try:
        run(module)
    except OSError as err:
        module.fail_json(msg=f"cannot talk to supervisord at {module.params['socket']}: {err}; "
                             "is it running (service supervisor start)?")
    except xmlrpc.client.Fault as fault:
        module.fail_json(msg=f"supervisord refused: {fault.faultString} (code {fault.faultCode})")


if __name__ == "__main__":
    main()
