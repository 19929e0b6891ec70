"""Audience mode from a client in its own network namespace (netns.py): the real app listens on
loopback (the presenter) and on the veth's host-side address (the room); the client runs
headless Chromium, requests and raw sockets with `ip netns exec`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import Listener, upload_and_wait
from netns import ClientNetns
from servers import AppServer, RedisServer, SecantusServer, wait_for

TOKEN = "presenter-token-for-the-tests-0123456789"
MAX_TOTAL = 14
MAX_PER_ADDRESS = 10

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


@pytest.fixture(scope="module")
def netns() -> Iterator[ClientNetns]:
    with ClientNetns() as ns:
        yield ns


@pytest.fixture(scope="module")
def room(
    workdir: Path, redis_server: RedisServer, mongo_server: SecantusServer, netns: ClientNetns
) -> Iterator[AppServer]:
    server = AppServer(
        workdir / "audience-app",
        redis_server,
        mongo_server,
        extra_env={
            "DEMOLAB_AUDIENCE_HOST": netns.host_ip,
            "DEMOLAB_UPLOAD_TOKEN": TOKEN,
            "DEMOLAB_AUDIENCE_MAX_CONNECTIONS": str(MAX_TOTAL),
            "DEMOLAB_AUDIENCE_MAX_PER_ADDRESS": str(MAX_PER_ADDRESS),
            "DEMOLAB_MAX_UPLOAD_BYTES": str(8 * 1024 * 1024),
        },
    )
    server.channel = "demolab:test:audience"
    server.env["DEMOLAB_REDIS_CHANNEL"] = server.channel
    server.start()
    yield server
    server.stop()


def audience_url(room: AppServer, netns: ClientNetns) -> str:
    return f"http://{netns.host_ip}:{room.port}/"


def stored_count(mongo: SecantusServer, room: AppServer) -> int:
    with mongo.client() as client:
        return client[room.database]["videos.files"].count_documents({})


def audience_stats(room: AppServer) -> dict[str, Any]:
    return requests.get(room.url + "/healthz", timeout=10).json()["audience"]  # type: ignore[no-any-return]


def test_only_the_presenter_page_carries_the_token(room: AppServer, netns: ClientNetns) -> None:
    url = audience_url(room, netns)
    local = requests.get(room.url + "/", timeout=10).text
    assert TOKEN in local and f'data-audience-url="{url}"' in local
    assert 'data-role="presenter"' in local
    remote = netns.run("get", url, "--source", netns.client_ips[0])
    assert remote["status"] == 200
    assert TOKEN not in remote["body"] and 'data-role="audience"' in remote["body"]
    assert f'data-audience-url="{url}"' in remote["body"]
    assert TOKEN not in url


def test_audience_address_serves_the_app_only_read_only(
    room: AppServer, netns: ClientNetns, redis_server: RedisServer, mongo_server: SecantusServer
) -> None:
    host = netns.host_ip
    ports = netns.run("probe", host, str(room.port), str(redis_server.port), str(mongo_server.port))
    assert ports == {
        str(room.port): "open",
        str(redis_server.port): "refused",
        str(mongo_server.port): "refused",
    }, ports
    # the app's own listeners: loopback (presenter) and the audience address, nothing wider
    listening = Path("/proc/net/tcp").read_text()
    port_hex = f":{room.port:04X}"
    binds = {
        line.split()[1]
        for line in listening.splitlines()[1:]
        if line.split()[1].endswith(port_hex) and line.split()[3] == "0A"
    }
    assert binds == {f"0100007F{port_hex}", _hex_ip(host) + port_hex}, binds
    for path in ("/healthz", "/nothing", "/video/zz.webm"):
        reply = netns.run("get", f"http://{host}:{room.port}{path}")
        assert reply["status"] == 404, (path, reply)
    for path in ("/videos", "/static/app.js", "/static/demo.css"):
        assert netns.run("get", f"http://{host}:{room.port}{path}")["status"] == 200, path


def _hex_ip(address: str) -> str:
    return "".join(f"{int(octet):02X}" for octet in reversed(address.split(".")))


def test_presenter_upload_plays_on_the_phone_and_the_phone_cannot_upload_without_token(
    room: AppServer, netns: ClientNetns, mongo_server: SecantusServer, clip: Path, artifacts: Path
) -> None:
    url = audience_url(room, netns)
    shots = artifacts
    phone = netns.popen("browse", url, "--out", str(shots), "--wait-video")
    try:
        assert phone.stdout is not None
        ready = json.loads(phone.stdout.readline() or "{}")
        assert ready.get("ready"), phone.stderr.read() if phone.stderr else ""
        presenter = Listener(room.url)
        try:
            video = upload_and_wait(room, presenter, clip, filename="from-the-stage.mp4")
        finally:
            presenter.close()
        result = json.loads(phone.stdout.readline() or "{}")
        phone.wait(30)
    finally:
        if phone.poll() is None:
            phone.kill()
    assert result["graph_updated"] and result["samples"] >= 2 and result["cpuNow"].endswith("%")
    assert result["role"] == "audience" and result["uploadHidden"] is True
    assert video["fileid"] in result["played"], result
    # no interaction on the phone: muted, with the visible unmute button
    assert result["muted"] is True and result["unmute_visible"] is True
    assert not result["errors"], result["errors"]
    assert (shots / "audience-phone-playing.png").stat().st_size > 5000

    before = stored_count(mongo_server, room)
    refused = netns.run("upload", url + "upload", str(clip))
    assert refused["status"] == 403 and "upload token" in refused["body"]["error"]
    wrong = netns.run("upload", url + "upload", str(clip), "--token", TOKEN[:-1] + "x")
    assert wrong["status"] == 403
    time.sleep(1.0)
    assert stored_count(mongo_server, room) == before, "a refused upload stored something"

    accepted = netns.run("upload", url + "upload", str(clip), "--token", TOKEN)
    assert accepted["status"] == 202, accepted
    wait_for(lambda: stored_count(mongo_server, room) == before + 1, 60, "the token upload stored")


def test_connection_caps_and_the_room_is_full_page(
    room: AppServer, netns: ClientNetns, artifacts: Path
) -> None:
    host, port = netns.host_ip, room.port
    url = audience_url(room, netns)
    a, b, c = netns.client_ips[1], netns.client_ips[2], netns.client_ips[3]
    wait_for(lambda: audience_stats(room)["connections"] == 0, 20, "earlier clients gone")
    holders = []
    try:
        holders.append(netns.popen("hold", host, str(port), str(MAX_PER_ADDRESS), "--source", a))
        assert json.loads(holders[0].stdout.readline())["held"] == MAX_PER_ADDRESS  # type: ignore[union-attr]
        wait_for(lambda: audience_stats(room)["connections"] == MAX_PER_ADDRESS, 10, "held")
        # one address at its own limit: refused, with the reason; another address still gets in
        mine = netns.run("get", url, "--source", a)
        assert mine["status"] == 503 and "already has" in mine["body"]
        assert netns.run("get", url, "--source", b)["status"] == 200
        rest = MAX_TOTAL - MAX_PER_ADDRESS
        holders.append(netns.popen("hold", host, str(port), str(rest), "--source", b))
        assert json.loads(holders[1].stdout.readline())["held"] == rest  # type: ignore[union-attr]
        wait_for(lambda: audience_stats(room)["connections"] == MAX_TOTAL, 10, "room full")
        full = netns.run("browse", url, "--out", str(artifacts / "room-full"))
        assert full["status"] == 503
        assert full["h1"] == "The room is full" and "tries again by itself" in full["text"]
        # the presenter and the app are fine meanwhile
        health = requests.get(room.url + "/healthz", timeout=10)
        assert health.status_code == 200
        assert health.json()["audience"]["refused"] >= 2
        assert requests.get(room.url + "/", timeout=10).status_code == 200
    finally:
        for holder in holders:
            holder.communicate(timeout=10)
    wait_for(lambda: audience_stats(room)["connections"] == 0, 20, "held connections closed")
    assert netns.run("get", url, "--source", c)["status"] == 200


def decode_qr(path: Path) -> str:
    """zbarimg (Debian's zbar-tools) reads the QR code in a screenshot."""
    done = subprocess.run(
        ["zbarimg", "--quiet", "--raw", str(path)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"no QR code found in {path}: {done.stderr}"
    return done.stdout.strip()


def test_presenter_page_shows_the_audience_url_and_a_qr_code_of_it(
    room: AppServer, netns: ClientNetns, artifacts: Path
) -> None:
    from playwright.sync_api import sync_playwright
    from test_browser import ARGS, CHROMIUM

    url = audience_url(room, netns)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1024, "height": 768})
        page.goto(room.url + "/")
        page.wait_for_function("document.getElementById('join-qr').hasAttribute('data-text')")
        assert page.text_content("#join-url") == url
        page.screenshot(path=str(artifacts / "presenter-1024x768.png"))
        page.locator("#join-qr").screenshot(path=str(artifacts / "join-qr.png"))
        assert decode_qr(artifacts / "join-qr.png") == url
        box = page.locator("#videos-box").bounding_box()
        assert box is not None and box["y"] + 40 < 768, "the QR header pushed the list away"
        # the token is out of sight until the presenter opens the fold
        assert not page.is_visible("#presenter-link")
        page.click("#presenter-device summary")
        page.locator("#presenter-qr").screenshot(path=str(artifacts / "presenter-device-qr.png"))
        link = decode_qr(artifacts / "presenter-device-qr.png")
        assert (
            link == f"{url}#upload-token={TOKEN}" and page.text_content("#presenter-link") == link
        )
        browser.close()


def test_the_presenters_phone_uploads_with_the_link_and_the_token_is_never_sent(
    room: AppServer, netns: ClientNetns, mongo_server: SecantusServer, clip: Path, artifacts: Path
) -> None:
    url = audience_url(room, netns)
    before = stored_count(mongo_server, room)
    result = netns.run("upload-ui", f"{url}#upload-token={TOKEN}", str(clip), "--out",
                       str(artifacts))  # fmt: skip
    assert result["href"] == url, "the token stays in the address bar"
    assert result["uploadHidden"] is False
    assert result["kind"] == "ok" and "Stored clip.mp4" in result["status"], result["status"]
    assert stored_count(mongo_server, room) == before + 1
    sent = [json.loads(r) for r in result["requests"]]
    uploads = [r for r in sent if r["url"].endswith("/upload")]
    assert len(uploads) == 1 and uploads[0].get("x-demolab-upload-token") == TOKEN
    # the token goes in that one header only: never in a URL the phone requested
    assert not [r["url"] for r in sent if TOKEN in r["url"]]
