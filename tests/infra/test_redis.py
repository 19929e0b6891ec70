"""Redis: loopback only, password required, subscribers never cut, data survives restarts."""

from __future__ import annotations

import shlex
import uuid

SERVICE = "demolab-redis"
PORT = 6379


def cli(host, args: str, password: str | None = None):
    # Without a password means without one: the presenter's shell settings (presenter_kit) export
    # REDISCLI_AUTH on a lab host, and a root ssh session may have read them (~/.bashrc).
    env = f"REDISCLI_AUTH={shlex.quote(password)} " if password else "env -u REDISCLI_AUTH "
    return host.run(f"{env}redis-cli -h 127.0.0.1 -p {PORT} {args}")


def test_service_runs(host, lab_service):
    assert lab_service.is_running(SERVICE), lab_service.logs(SERVICE)


def test_listens_on_loopback_only(host):
    assert host.socket(f"tcp://127.0.0.1:{PORT}").is_listening
    assert not host.socket(f"tcp://0.0.0.0:{PORT}").is_listening
    listeners = [s for s in host.socket.get_listening_sockets() if s.endswith(f":{PORT}")]
    assert listeners and all("127.0.0.1" in s for s in listeners), listeners


def test_client_without_password_is_rejected(host):
    out = cli(host, "ping")
    assert "NOAUTH" in out.stdout + out.stderr


def test_wrong_password_is_rejected(host):
    out = cli(host, "ping", password="not-the-password")
    assert "PONG" not in out.stdout
    assert "WRONGPASS" in out.stdout + out.stderr or "invalid" in (out.stdout + out.stderr).lower()


def test_client_with_password(host, secret):
    assert cli(host, "ping", password=secret("redis")).stdout.strip() == "PONG"


def test_config_secures_the_secret_and_keeps_subscribers(host, secret):
    conf = host.file("/etc/demolab/redis.conf")
    assert conf.mode == 0o640 and conf.user == "root" and conf.group == "redis"
    pw = secret("redis")
    assert cli(host, "config get timeout", password=pw).stdout.split() == ["timeout", "0"]
    assert cli(host, "config get protected-mode", password=pw).stdout.split() == ["protected-mode", "yes"]


def test_data_survives_restart(host, secret, lab_service):
    pw = secret("redis")
    key, value = f"demolab-test-{uuid.uuid4().hex}", uuid.uuid4().hex
    assert cli(host, f"set {key} {value}", password=pw).stdout.strip() == "OK"
    lab_service.restart(SERVICE, PORT)
    assert cli(host, f"get {key}", password=pw).stdout.strip() == value
    cli(host, f"del {key}", password=pw)
