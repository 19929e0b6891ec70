"""The demo page on a projector: headless Chromium at 1024x768 and 1920x1080, screenshots kept
in the artifacts directory and checked by assertions (chart fills its box after a resize, the
video list is in view, the upload bar moves during a throttled upload, sound after a click)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from servers import AppServer
from test_browser import browser, open_page  # noqa: F401  (the module-scoped Chromium)

SIZES = [(1024, 768), (1920, 1080)]

GEOMETRY = """() => {
  const box = document.getElementById('cpu').getBoundingClientRect();
  const canvas = document.querySelector('#cpu canvas.flot-base').getBoundingClientRect();
  const list = document.getElementById('videos-box').getBoundingClientRect();
  const upload = document.getElementById('upload-box').getBoundingClientRect();
  const player = document.getElementById('player').getBoundingClientRect();
  const style = getComputedStyle(document.body);
  return {box: [box.width, box.height], canvas: [canvas.width, canvas.height],
          list: [list.top, list.bottom, list.left, list.right],
          upload: [upload.top, upload.bottom], player: [player.top, player.bottom],
          vw: innerWidth, vh: innerHeight, font: parseFloat(style.fontSize),
          fg: style.color, bg: style.backgroundColor,
          cpuNow: document.getElementById('cpu-now').textContent,
          scrollH: document.documentElement.scrollHeight};
}"""


def luminance(css: str) -> float:
    r, g, b = (int(v) / 255 for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3])

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def contrast(fg: str, bg: str) -> float:
    hi, lo = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_layout_at_projector_sizes_and_chart_follows_resize(
    browser: Any,  # noqa: F811
    app: AppServer,
    stored_video: dict[str, Any],
    artifacts: Path,
) -> None:
    watched = open_page(browser, app)
    page = watched.page
    page.wait_for_function("window.demolab.samples.length >= 2", timeout=15_000)
    seen = []
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(600)  # ResizeObserver → requestAnimationFrame → redraw
        geo = page.evaluate(GEOMETRY)
        page.screenshot(path=str(artifacts / f"demo-{width}x{height}.png"))
        seen.append(geo)
        bw, bh = geo["box"]
        cw, ch = geo["canvas"]
        assert abs(bw - cw) <= 2 and abs(bh - ch) <= 2, f"chart does not fill its box: {geo}"
        top, bottom, left, right = geo["list"]
        assert 0 <= top < bottom <= height and 0 <= left < right <= width, f"list off-screen {geo}"
        assert geo["upload"][1] <= height and geo["player"][1] <= height, geo
        assert geo["scrollH"] <= height + 1, "the page scrolls at a projector size"
        assert geo["font"] >= 18, "type too small for the back of the room"
        assert contrast(geo["fg"], geo["bg"]) >= 7, (geo["fg"], geo["bg"])
        assert geo["cpuNow"].endswith("%")
        # the stored video is listed and visible
        item = page.locator(f"#videos li[data-fileid='{stored_video['fileid']}']")
        assert item.is_visible()
    assert seen[1]["box"][0] > seen[0]["box"][0] * 1.5 and seen[1]["box"][1] > seen[0]["box"][1]
    # and back: the chart shrinks with the window too
    page.set_viewport_size({"width": 1024, "height": 768})
    page.wait_for_timeout(600)
    geo = page.evaluate(GEOMETRY)
    assert abs(geo["box"][0] - geo["canvas"][0]) <= 2 and abs(geo["box"][1] - geo["canvas"][1]) <= 2
    # axis units on the chart
    labels = page.evaluate(
        "Array.from(document.querySelectorAll('#cpu text')).map(t => t.textContent)"
    )
    assert "100 %" in labels and any(re.fullmatch(r"\d\d:\d\d:\d\d", t) for t in labels), labels
    assert not watched.errors, watched.errors
    page.close()


def test_accessibility_basics(browser: Any, app: AppServer) -> None:  # noqa: F811
    watched = open_page(browser, app)
    page = watched.page
    unlabelled = page.evaluate(
        "Array.from(document.querySelectorAll('input, select, progress'))"
        ".filter(el => !el.labels || el.labels.length === 0).map(el => el.id)"
    )
    assert unlabelled == []
    for selector in ("#status", "#conn", "#now-playing"):
        assert page.get_attribute(selector, "aria-live") == "polite", selector
    page.close()


def test_upload_bar_moves_while_bytes_are_sent(
    browser: Any,  # noqa: F811
    app: AppServer,
    big_clip: Path,
    artifacts: Path,
) -> None:
    watched = open_page(browser, app)
    page = watched.page
    page.set_viewport_size({"width": 1024, "height": 768})
    data = big_clip.read_bytes()
    assert len(data) > 600_000
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    # ~4 s for the file: several progress events while the bytes are on the way
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 20, "downloadThroughput": -1,
         "uploadThroughput": len(data) / 4},
    )  # fmt: skip
    page.set_input_files(
        "#file", files=[{"name": "throttled.mp4", "mimeType": "video/mp4", "buffer": data}]
    )
    page.click("#upload-button")
    page.wait_for_function(
        "window.demolab.uploadProgress.some(p => p > 20 && p < 90)", timeout=20_000
    )
    mid = page.evaluate("document.getElementById('progress').value")
    label = page.text_content("#progress-label")
    page.screenshot(path=str(artifacts / "demo-upload-1024x768.png"))
    assert 0 < mid < 100 and label == "Sending"
    assert "Sending throttled.mp4" in (page.text_content("#status") or "")
    page.wait_for_function("document.getElementById('status').className === 'ok'", timeout=90_000)
    steps = page.evaluate("window.demolab.uploadProgress")
    middle = [p for p in steps if 0 < p < 100]
    assert len(set(round(p) for p in middle)) >= 3, steps
    assert steps == sorted(steps)
    unthrottled = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    cdp.send("Network.emulateNetworkConditions", unthrottled)
    page.close()


@pytest.mark.parametrize("clicked", [True, False])
def test_sound_only_after_the_viewer_interacted(
    browser: Any,  # noqa: F811
    app: AppServer,
    clip: Path,
    clicked: bool,
) -> None:
    sender, viewer = open_page(browser, app), open_page(browser, app)
    if clicked:
        viewer.page.mouse.click(5, 5)  # a real pointer event on the page
    sender.page.set_input_files(
        "#file", files=[{"name": f"sound-{str(clicked).lower()}.mp4", "mimeType": "video/mp4",
                         "buffer": clip.read_bytes()}],
    )  # fmt: skip
    sender.page.click("#upload-button")
    viewer.page.wait_for_function(
        "document.getElementById('player').currentTime > 0.3 && "
        f"document.getElementById('now-playing').textContent.startsWith('sound-{str(clicked).lower()}')",
        timeout=60_000,
    )
    muted = viewer.page.evaluate("document.getElementById('player').muted")
    assert muted is (not clicked)
    assert viewer.page.is_visible("#unmute") is (not clicked)
    if not clicked:
        viewer.page.click("#unmute")
        assert viewer.page.evaluate("document.getElementById('player').muted") is False
        assert not viewer.page.is_visible("#unmute")
    sender.page.close()
    viewer.page.close()
