import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import DevpiServer, Upstream, clean_pip_env, make_wheel  # noqa: E402


@pytest.fixture(scope="session")
def devpi_venv() -> Path:
    venv = Path(os.environ.get("DEVPI_TEST_VENV", ""))
    if not (venv / "bin" / "devpi-server").exists():
        pytest.fail("DEVPI_TEST_VENV must name a venv with devpi-server/devpi-client "
                    "(tests/devpi/run.sh builds it from roles/devpi/files/requirements.lock)")
    return venv


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("wheels")
    return {
        "demolab-alpha": make_wheel(d, "demolab-alpha", "1.0", requires=["demolab-beta==1.0"]),
        "demolab-beta": make_wheel(d, "demolab-beta", "1.0"),
        "demolab-gamma": make_wheel(d, "demolab-gamma", "2.0", payload=200_000),
        # on the upstream but NOT in any lock: never cached
        "demolab-delta": make_wheel(d, "demolab-delta", "1.0"),
    }


@pytest.fixture(scope="session")
def bulk_wheels(tmp_path_factory) -> list[Path]:
    """Enough bytes that an upload can be killed half-way."""
    d = tmp_path_factory.mktemp("bulk")
    return [make_wheel(d, f"demolab-bulk{i:02d}", "1.0", payload=3_000_000) for i in range(16)]


@pytest.fixture(scope="session")
def real_wheels() -> list[Path]:
    """The wheels of mirror/requirements.lock (tests/devpi/run.sh downloads them once)."""
    found = sorted(Path(os.environ.get("DEVPI_TEST_WHEELS", "/nonexistent")).glob("*.whl"))
    if not found:
        pytest.fail("DEVPI_TEST_WHEELS must name the directory of mirror/requirements.lock's "
                    "wheels (tests/devpi/run.sh downloads them)")
    return found


@pytest.fixture(scope="session")
def upstream(tmp_path_factory, wheels, bulk_wheels, real_wheels):
    server = Upstream(tmp_path_factory.mktemp("upstream"),
                      [*wheels.values(), *bulk_wheels, *real_wheels])
    yield server
    server.close()


@pytest.fixture
def pip_env(upstream):
    """The machine's pip configuration left out; nothing but loopback."""
    return clean_pip_env(PIP_INDEX_URL="http://127.0.0.1:9/simple/")


PASSWORD = "test-root-secret"


@pytest.fixture(scope="session")
def serverdir_template(tmp_path_factory, devpi_venv) -> Path:
    """One devpi-init per session; every test starts from a copy."""
    path = tmp_path_factory.mktemp("template") / "serverdir"
    DevpiServer(devpi_venv, path, PASSWORD)
    return path


@pytest.fixture
def devpi(tmp_path, devpi_venv, upstream, serverdir_template):
    server = DevpiServer(devpi_venv, tmp_path / "serverdir", PASSWORD,
                         template=serverdir_template).start()
    setup = server.tool("setup", "--mirror-url", upstream.url)
    assert setup.returncode == 0, setup.stderr
    yield server
    server.stop()
