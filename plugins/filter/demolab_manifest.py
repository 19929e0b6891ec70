"""The one reader of the lab's manifests (mirror/*.txt): one entry a line, `#` comments.

    {{ lookup('ansible.builtin.file', lab_manifest_dir ~ '/urls.txt') | demolab_manifest }}

ansible.cfg's filter_plugins makes it available to every playbook and role of the repo.
"""

from __future__ import annotations


def demolab_manifest(text: str) -> list[str]:
    """The entries of a manifest's text: each line without its comment (from `#` on) and
    surrounding blanks; empty lines dropped; order kept."""
    if not isinstance(text, str):
        raise TypeError(f"demolab_manifest reads a manifest's text (a string), not {type(text).__name__}")
    entries = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [entry for entry in entries if entry]


class FilterModule:
    """Ansible's entry point for this filter file."""

    def filters(self) -> dict:
        return {"demolab_manifest": demolab_manifest}
