"""Lookup demolab_secret: a lab secret kept on the controller, loaded or generated.

    redis_password: "{{ lookup('demolab_secret', 'redis') }}"

One lookup where a role used to include the lab role's `secret` entry point (four task results
per secret, ~0.6 s of a changed=0 rerun, measured with profile_tasks).
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.loader import lookup_loader
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: demolab_secret
short_description: Load (or generate) a lab secret kept on the controller
description:
  - Returns the secret NAME of the current host, kept in C(lab_secrets_dir/HOST/NAME) on the
    controller (mode 0600). A missing file is generated (C(lab_secret_length) letters and
    digits, ansible.builtin.password) unless C(lab_secrets_generate) is false; then the play
    stops with the file it expected and what to do.
  - Reads lab_secrets_dir, lab_secrets_generate and lab_secret_length (role lab) and
    inventory_hostname. Use it in set_fact with no_log.
options:
  _terms:
    description: Secret names (file names under lab_secrets_dir/HOST/).
    required: true
"""

RETURN = r"""
_raw:
  description: The secrets, in the order of the names.
  type: list
  elements: str
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        variables = variables or {}

        def lab(name):
            if name not in variables:
                raise AnsibleError(f"demolab_secret needs {name} (role lab's settings): list the "
                                   "lab role in the play first (playbooks/site.yml does)")
            return self._templar.template(variables[name])

        base = os.path.expanduser(str(lab("lab_secrets_dir")))
        host = str(variables.get("inventory_hostname", ""))
        generate = boolean(lab("lab_secrets_generate"), strict=False)
        length = int(lab("lab_secret_length"))
        password = lookup_loader.get("ansible.builtin.password", loader=self._loader,
                                     templar=self._templar)
        values = []
        for name in terms:
            path = os.path.join(base, host, str(name))
            if not generate and not os.path.isfile(path):
                raise AnsibleError(
                    f"The secret '{name}' for {host} is missing: {path} does not exist and "
                    "lab_secrets_generate is false. Copy it from the machine that provisioned this "
                    "lab (or the bundle), or run with -e lab_secrets_generate=true to create a "
                    "new one.")
            values += password.run([path], variables, chars=["ascii_letters", "digits"],
                                   length=length)
        return values
