import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "roles" / "http_cache" / "files"))

from helpers import Origin, ProxyProcess, make_ca, make_server_cert, tls_server_context  # noqa: E402


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    if not shutil.which("openssl"):
        pytest.fail("openssl binary missing (tests/apt/http_cache.txt)")
    d = tmp_path_factory.mktemp("pki")
    up_key, up_cert = make_ca(d, "demolab-test-upstream-ca")
    srv_key, srv_cert = make_server_cert(d, up_key, up_cert)
    lab_key, lab_cert = make_ca(d, "demolab-test-lab-ca")
    signing = d / "signing.key"
    from helpers import openssl
    openssl("genrsa", "-out", str(signing), "2048")
    return {"upstream_ca": up_cert, "srv_key": srv_key, "srv_cert": srv_cert,
            "lab_key": lab_key, "lab_cert": lab_cert, "signing_key": signing}


@pytest.fixture
def origin():
    server = Origin()
    yield server
    server.close()


@pytest.fixture
def tls_origin(pki):
    server = Origin(tls=tls_server_context(pki["srv_key"], pki["srv_cert"]))
    yield server
    server.close()


@pytest.fixture
def store(tmp_path):
    return tmp_path / "store"


@pytest.fixture
def proxies(tmp_path, pki):
    started = []

    def start(mode, store, **kwargs):
        proxy = ProxyProcess(tmp_path, mode, store, pki, **kwargs)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()
