"""The lab's endpoints are defined once (roles/lab/defaults/main.yml) and read from there.

The helpers read them from /etc/demolab/lab.json (the lab role writes it), the roles derive
their defaults from the lab_* variables: neither repeats a port, index or directory that the
lab defines. Every Python file that ships is a .py file that ruff checks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
LAB_DEFAULTS = yaml.safe_load((ROLES / "lab" / "defaults" / "main.yml").read_text())
LAB_VARS = yaml.safe_load((ROLES / "lab" / "vars" / "main.yml").read_text())
# The one place a helper may name: where lab.json is (DEMOLAB_LAB_JSON overrides it).
LAB_JSON_PATH = "/etc/demolab/lab.json"
# The lab's literal endpoints: ports, the devpi index and the directories (every other URL and
# path in lab.json is derived from these).
ENDPOINT_VARS = ["lab_devpi_port", "lab_proxy_port", "lab_apt_mirror_port", "lab_demo_app_port", "lab_devpi_index",
                 "lab_etc_dir", "lab_state_dir", "lab_store_dir", "lab_prefix", "lab_log_dir"]


def literals() -> dict[str, re.Pattern[str]]:
    found = {}
    for name in ENDPOINT_VARS:
        value = str(LAB_DEFAULTS[name])
        assert "{{" not in value, f"{name} should be a literal in the lab's defaults, not {value!r}"
        # a port as a number of its own, a path or index as itself or a prefix of a longer path
        found[value] = re.compile(rf"(?<![\w.]){re.escape(value)}(?![\w.])" if value.isdigit()
                                  else rf"(?<![\w/.-]){re.escape(value)}(?![\w.-])")
    return found


def helpers() -> list[Path]:
    """Every Python file a role installs (roles/*/files, the demolab_talk and demolab_cache packages)."""
    return sorted(p for p in ROLES.glob("*/files/**/*.py") if "__pycache__" not in p.parts)


def hard_coded(text: str) -> list[str]:
    text = text.replace(LAB_JSON_PATH, "")
    return sorted(value for value, pattern in literals().items() if pattern.search(text))


def test_the_literals_are_found():
    """The check itself: each literal is caught, the lab.json constant is not."""
    assert hard_coded('ETC = "/etc/demolab"\nPORT = 3141\nLOG = "/var/lib/demolab/http_cache/x"') == \
        ["/etc/demolab", "/var/lib/demolab", "3141"]
    assert hard_coded(f'LAB_JSON = Path(os.environ.get("DEMOLAB_LAB_JSON") or "{LAB_JSON_PATH}")') == []
    assert hard_coded('index = "lab/offline"; other = 31415; "/etc/demolab-x"') == ["lab/offline"]


@pytest.mark.parametrize("path", helpers(), ids=lambda p: str(p.relative_to(ROLES)))
def test_a_helper_reads_the_lab_endpoints_from_lab_json(path: Path):
    found = hard_coded(path.read_text())
    assert not found, (f"{path.relative_to(REPO)} hard-codes {found}: read them from lab.json "
                       f"({LAB_JSON_PATH}, DEMOLAB_LAB_JSON for tests)")


@pytest.mark.parametrize("role", sorted(p.parent.parent for p in ROLES.glob("*/defaults/main.yml")
                                        if p.parent.parent.name != "lab"), ids=lambda p: p.name)
def test_a_role_default_derives_from_the_lab_endpoints(role: Path):
    defaults = yaml.safe_load((role / "defaults" / "main.yml").read_text()) or {}
    bad = {}
    for key, value in defaults.items():
        found = hard_coded(yaml.safe_dump(value))
        if found:
            bad[key] = found
    assert not bad, f"{role.name}'s defaults repeat lab endpoints (use the lab_* variables): {bad}"


def test_lab_json_holds_what_the_helpers_read():
    doc = LAB_VARS["__lab_json"]
    for key in ("mode", "prefix", "etc_dir", "state_dir", "store_dir", "log_dir", "talk_dir", "ready_dir",
                "mirror_address", "mirror_host"):
        assert key in doc, key
    assert set(doc["devpi"]) == {"port", "url", "index", "index_url", "lock"}
    assert set(doc["proxy"]) == {"port", "url", "miss_log"}
    assert set(doc["apt_mirror"]) == {"port", "url"}
    assert set(doc["demo_app"]) == {"port", "url"}
    assert set(doc["rehearsal"]) == {"report"}


def test_no_extensionless_python_helper():
    """Helpers are .py files in the repository (installed under their command names)."""
    tracked = subprocess.run(["git", "ls-files", "roles", "tests", "mirror", "talk", "demo-app"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    scripts = [f for f in tracked if not f.endswith(".py") and (REPO / f).is_file()
               and (REPO / f).read_bytes()[:64].split(b"\n")[0].startswith(b"#!")
               and b"python" in (REPO / f).read_bytes()[:64].split(b"\n")[0]]
    assert not scripts, f"Python without .py (ruff does not see it): {scripts}"


def test_ruff_sees_every_python_file_that_ships():
    """The Makefile's lint (ruff over the paths its lint line names; demo-app with its own config)."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed next to this Python (make venv)")
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    makefile = (REPO / "Makefile").read_text()
    lint = re.search(r"^\t@\$\(BIN\)/ruff check ([\w ]+)$", makefile, re.M)
    assert lint and "cd demo-app && " in makefile, "the Makefile's lint no longer runs ruff as this test expects"
    seen = set()
    for cwd, paths in ((REPO, lint.group(1).split()), (REPO / "demo-app", ["."])):
        out = subprocess.run([str(ruff), "check", "--show-files", *paths], cwd=cwd, capture_output=True,
                             text=True, check=True).stdout
        seen |= {str(Path(line).resolve().relative_to(REPO)) for line in out.split() if line.endswith(".py")}
    missing = sorted(set(tracked) - seen)
    assert not missing, f"ruff does not check: {missing}"
