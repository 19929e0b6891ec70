"""Every role documents the same variables in defaults/main.yml, meta/argument_specs.yml and README."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROLES = sorted(p for p in (Path(__file__).resolve().parents[2] / "roles").iterdir()
               if (p / "tasks" / "main.yml").exists())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def spec_options(role: Path) -> dict[str, dict]:
    specs = load(role / "meta" / "argument_specs.yml")["argument_specs"]
    options: dict[str, dict] = {}
    for entry in specs.values():
        options.update(entry.get("options") or {})
    return options


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_defaults_and_argument_specs_do_not_drift(role: Path):
    defaults = load(role / "defaults" / "main.yml")
    options = spec_options(role)
    undocumented = sorted(set(defaults) - set(options))
    assert not undocumented, f"in defaults but not in argument_specs: {undocumented}"
    optional = {k for k, v in options.items() if not v.get("required")}
    missing = sorted(optional - set(defaults))
    assert not missing, f"optional in argument_specs but no default: {missing}"
    for key, value in defaults.items():
        spec_default = options[key].get("default")
        if spec_default is None or (isinstance(value, str) and "{{" in value):
            continue  # computed or long defaults are described, not repeated
        assert spec_default == value, f"{key}: default {value!r} but argument_specs says {spec_default!r}"


@pytest.mark.parametrize("role", ROLES, ids=lambda p: p.name)
def test_variables_are_prefixed_and_in_readme(role: Path):
    readme = (role / "README.md").read_text()
    prefix = role.name + "_"
    for key in spec_options(role):
        assert key.startswith(prefix), f"{key} is not prefixed with {prefix}"
        assert f"`{key}`" in readme, f"{key} missing from {role.name}/README.md"
