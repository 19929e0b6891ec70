"""demolab-ready: green when every lab service works, red (and exit 1) naming the one that does not."""

from __future__ import annotations

import json

EXPECTED = {"demolab-apt-mirror", "demolab-devpi", "demolab-redis", "demolab-mongodb", "demolab-app",
            "demolab-http-cache"}


def report(host) -> tuple[int, dict]:
    out = host.run("demolab-ready --json")
    return out.rc, json.loads(out.stdout)


def test_every_service_is_green(host):
    rc, doc = report(host)
    names = {s["name"] for s in doc["services"]}
    assert EXPECTED <= names, names
    assert rc == 0 and doc["ready"], json.dumps(doc, indent=2)
    assert doc["mode"] in ("online", "offline")


def test_a_stopped_service_turns_red_and_says_what_to_do(host, lab_service):
    host.run_test("demolab-service stop demolab-redis")
    try:
        rc, doc = report(host)
        by_name = {s["name"]: s for s in doc["services"]}
        assert rc == 1 and not doc["ready"]
        assert not by_name["demolab-redis"]["ok"]
        assert "demolab-service" in by_name["demolab-redis"]["hint"]
        # the app keeps running, but its health check reports Redis failing
        assert not by_name["demolab-app"]["ok"], by_name["demolab-app"]
        assert "redis" in " ".join(by_name["demolab-app"]["detail"])
        text = host.run("demolab-ready")
        assert text.rc == 1 and "FAIL demolab-redis" in text.stdout, text.stdout
    finally:
        lab_service.restart("demolab-redis", 6379)
    rc, doc = report(host)
    assert rc == 0, json.dumps(doc, indent=2)
