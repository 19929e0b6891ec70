"""Headless Debian Chromium through Python playwright (never `playwright install`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from servers import AppServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

COUNT_PLOT_PIXELS = """() => {
  const canvas = document.querySelector('#cpu canvas.flot-base');
  if (!canvas) return -1;
  const ctx = canvas.getContext('2d');
  const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  let series = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 0 && b > r + 40 && b > g + 10) series++;  // the blue CPU line / fill
  }
  return series;
}"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make deps` installs Debian's chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=ARGS, bypass_csp=True
        )
        # fresh user-data-dir per run; bypass_csp only lets playwright evaluate its probes
        yield context  # type: ignore[misc]
        context.close()


class Watched:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda req: self.requests.append(req.url))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def foreign_requests(self) -> list[str]:
        return [
            url
            for url in self.requests
            if urlparse(url).scheme not in {"data", "blob"}
            and urlparse(url).hostname not in LOCAL_HOSTS
        ]


def open_page(browser: Any, app: AppServer) -> Watched:
    watched = Watched(browser.new_page())
    watched.page.goto(app.url + "/")
    watched.page.wait_for_function("window.demolab && window.io && true", timeout=10_000)
    watched.page.wait_for_function(
        "document.getElementById('conn').textContent.startsWith('connected')", timeout=10_000
    )
    return watched


def test_graph_draws_after_three_samples(browser: Any, app: AppServer) -> None:
    watched = open_page(browser, app)
    page = watched.page
    page.wait_for_function("window.demolab.samples.length >= 3", timeout=15_000)
    page.wait_for_timeout(1200)  # at least one live sample redrawn after history
    assert page.evaluate(COUNT_PLOT_PIXELS) > 50
    page.screenshot(path=str(app.workdir / "page.png"))
    assert not watched.errors
    assert not watched.foreign_requests()
    page.close()


def test_upload_in_one_page_plays_in_another(browser: Any, app: AppServer, clip: Path) -> None:
    sender, viewer = open_page(browser, app), open_page(browser, app)
    name = "<img src=x onerror=alert(1)><script>alert(2)<script>.mp4"
    sender.page.set_input_files(
        "#file", files=[{"name": name, "mimeType": "video/mp4", "buffer": clip.read_bytes()}]
    )
    sender.page.fill("#uploader", "<i>Grace</i>")
    sender.page.click("#upload-button")
    sender.page.wait_for_function(
        "document.getElementById('status').className === 'ok'", timeout=60_000
    )
    assert name in sender.page.text_content("#status")

    viewer.page.wait_for_function(
        "document.getElementById('player').currentTime > 0.5", timeout=30_000
    )
    played = viewer.page.evaluate("window.demolab.played")
    assert len(played) >= 1
    # the markup is shown as text, never parsed
    item = viewer.page.locator(f"#videos li[data-fileid='{played[-1]}'] a")
    assert item.text_content() == name
    assert (
        viewer.page.evaluate("document.querySelectorAll('#videos img, #videos script').length") == 0
    )
    assert "<i>Grace</i>" in viewer.page.text_content("#now-playing")
    for watched in (sender, viewer):
        assert not watched.dialogs, watched.dialogs
        assert not watched.errors, watched.errors
        assert not watched.foreign_requests(), watched.foreign_requests()
        watched.page.close()


def test_non_video_shows_clear_error(browser: Any, app: AppServer) -> None:
    watched = open_page(browser, app)
    page = watched.page
    before = page.evaluate("document.querySelectorAll('#videos li').length")
    page.set_input_files(
        "#file", files=[{"name": "slides.pdf", "mimeType": "application/pdf",
                         "buffer": b"%PDF-1.4\n" + b"x" * 4000}],
    )  # fmt: skip
    page.click("#upload-button")
    page.wait_for_function(
        "document.getElementById('status').className === 'error'", timeout=20_000
    )
    status = page.text_content("#status") or ""
    assert "slides.pdf" in status and "not a video" in status
    page.wait_for_timeout(500)
    assert page.evaluate("document.querySelectorAll('#videos li').length") == before
    assert not watched.foreign_requests()
    page.close()
