#!/usr/bin/python3
"""Ansible module demolab_original: keep the originals of files before the lab first changes them.

One call per role for all of its files (it replaced an include_role per file, three task
results each: ~0.15 s apiece on a changed=0 rerun, measured with profile_tasks).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: demolab_original
short_description: Keep the original of each file before the lab first changes it
description:
  - For every path not recorded yet in O(dir), keeps a byte-exact copy with owner and mode
    (C(cp -a)) as C(SHA1.orig), or no copy when the file did not exist, and records the path
    in C(SHA1.path) (SHA1 of the path). C(make remove) (role lab, tasks_from remove) restores
    every recorded path from its copy, or removes it when there was none.
  - A path already recorded is left alone, so the original is the one from before the lab's
    first run. Supports check mode.
options:
  paths:
    description: Files (or directories) about to be replaced or edited.
    type: list
    elements: path
    required: true
  dir:
    description: Where the originals are kept (lab_originals_dir).
    type: path
    required: true
author: demolab
"""

EXAMPLES = r"""
- name: Keep the original /etc/pip.conf (make remove restores it)
  demolab_original:
    paths: [/etc/pip.conf]
    dir: "{{ lab_originals_dir }}"
"""

RETURN = r"""
kept:
  description: The paths recorded by this run (in check mode, those that would be).
  type: list
  elements: str
  returned: always
"""


def keep(path: str, store: str) -> None:
    key = hashlib.sha1(path.encode()).hexdigest()
    os.makedirs(store, mode=0o700, exist_ok=True)
    os.chmod(store, 0o700)
    copy = os.path.join(store, key + ".orig")
    if os.path.isdir(copy) and not os.path.islink(copy):
        shutil.rmtree(copy)
    elif os.path.lexists(copy):
        os.unlink(copy)
    if os.path.lexists(path):
        subprocess.run(["cp", "-a", "--", path, copy], check=True, capture_output=True, text=True)
    record = os.path.join(store, key + ".path")
    with open(record + ".tmp", "w", encoding="utf-8") as f:
        f.write(path + "\n")
    os.replace(record + ".tmp", record)


def main() -> None:
    module = AnsibleModule(
        argument_spec={"paths": {"type": "list", "elements": "path", "required": True},
                       "dir": {"type": "path", "required": True}},
        supports_check_mode=True,
    )
    store = module.params["dir"]
    todo = [p for p in dict.fromkeys(module.params["paths"])
            if not os.path.exists(os.path.join(store, hashlib.sha1(p.encode()).hexdigest() + ".path"))]
    if not module.check_mode:
        for path in todo:
            try:
                keep(path, store)
            except (OSError, subprocess.CalledProcessError) as e:
                detail = getattr(e, "stderr", "") or str(e)
                module.fail_json(msg=f"cannot keep the original of {path} in {store}: {detail.strip()}"
                                 " (nothing of it was changed yet; free space or fix the "
                                 "permissions, then run again)", kept=[])
    module.exit_json(changed=bool(todo), kept=todo)


if __name__ == "__main__":
    main()
