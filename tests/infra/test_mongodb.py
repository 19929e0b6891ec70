"""MongoDB-wire server: loopback only, auth required, GridFS round trip, survives restarts."""

from __future__ import annotations

import json
import shlex

import pytest

SERVICE = "demolab-mongodb"
PORT = 27017

# Runs ON the lab host with the server's own Python (it has pymongo).
PROBE = r"""
import hashlib, json, os, sys
from pymongo import MongoClient
from pymongo.errors import OperationFailure
import gridfs
mode = sys.argv[1]
out = {}
if mode == "noauth":
    c = MongoClient("127.0.0.1", %(port)d, serverSelectionTimeoutMS=5000)
    try:
        c.demolab.probe.insert_one({"x": 1})
        out["rejected"] = False
    except OperationFailure as e:
        out["rejected"] = True
        out["error"] = str(e)[:200]
else:
    c = MongoClient("127.0.0.1", %(port)d, username="demolab", password=os.environ["PW"],
                    authSource="demolab", serverSelectionTimeoutMS=5000)
    fs = gridfs.GridFS(c.demolab)
    if mode == "put":
        data = os.urandom(5 * 1024 * 1024 + 123)
        fid = fs.put(data, filename="probe.bin")
        back = fs.get(fid).read()
        out = {"id": str(fid), "sha": hashlib.sha256(data).hexdigest(),
               "back": hashlib.sha256(back).hexdigest(), "len": len(back)}
    elif mode == "get":
        from bson import ObjectId
        f = fs.get(ObjectId(sys.argv[2]))
        out = {"sha": hashlib.sha256(f.read()).hexdigest()}
        fs.delete(ObjectId(sys.argv[2]))
print(json.dumps(out))
""" % {"port": PORT}


def python(host) -> str:
    for candidate in ("/opt/demolab/secantus/bin/python", "/opt/demolab/mongodb-tools/bin/python"):
        if host.file(candidate).exists:
            return candidate
    pytest.fail("no Python with pymongo on the host: is the mongodb role applied?")


def probe(host, *args: str, password: str = "") -> dict:
    host.run_test(f"cat > /tmp/demolab-probe.py <<'PYEOF'\n{PROBE}\nPYEOF")
    cmd = f"PW={shlex.quote(password)} {python(host)} /tmp/demolab-probe.py " + " ".join(map(shlex.quote, args))
    out = host.run(cmd)
    assert out.rc == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_service_runs(host, lab_service):
    assert lab_service.is_running(SERVICE), lab_service.logs(SERVICE)


def test_listens_on_loopback_only(host):
    assert host.socket(f"tcp://127.0.0.1:{PORT}").is_listening
    listeners = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{PORT}")]
    assert listeners and all("127.0.0.1" in s for s in listeners), listeners


def test_client_without_credentials_is_rejected(host):
    result = probe(host, "noauth")
    assert result["rejected"], result


def test_gridfs_round_trip_survives_restart(host, secret, lab_service):
    pw = secret("mongodb-app")
    put = probe(host, "put", password=pw)
    assert put["sha"] == put["back"] and put["len"] == 5 * 1024 * 1024 + 123
    lab_service.restart(SERVICE, PORT)
    got = probe(host, "get", put["id"], password=pw)
    assert got["sha"] == put["sha"]


def test_data_files_are_private(host):
    d = host.file("/var/lib/demolab/mongodb")
    assert d.is_directory and d.mode == 0o750 and d.user == "demolab-mongodb"
