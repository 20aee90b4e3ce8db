"""The console in headless Chromium (Debian's chromium + chromium-driver, via selenium).

Loads each page against a real server over real files, checks the live
spectrogram advances, plays a clip and submits a review that the export then
holds. With LISTENER_CONSOLE_SCREENSHOTS=<folder> it also saves a PNG of each
page there (docs/console/ holds the committed ones).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry
from support.browser import chromium, needs_browser, wait_for
from support.console_support import feed_live, make_view

from listener.web.console import Console
from listener.web.server import WebServer

pytestmark = [pytest.mark.slow, needs_browser]
SHOTS = os.environ.get("LISTENER_CONSOLE_SCREENSHOTS")


@pytest.fixture
def console_url(tmp_path: Path) -> Iterator[str]:
    """A console over real files, its live feed playing, on its own loop in a thread."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        view = make_view(tmp_path)
        assert view.coverage is not None
        now = time.time()
        # A day as the status page shows it: two losses and a stretch the daemon was down.
        for a, b, kind, why in ((86400, 50000, "scored", ""), (50000, 47000, "lost", "gap"),
                                (47000, 30000, "scored", ""), (16000, 9000, "scored", ""),
                                (9000, 8400, "lost", "backlog"), (8400, 120, "scored", "")):
            view.coverage.record(now - a, now - b, kind, why)
        server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                           console=Console([view], tick_s=0.5))
        await server.start()
        feeder = asyncio.create_task(feed_live(view, 60.0, pace=2.0))
        box.update(url=server.url, stop=asyncio.Event(), loop=asyncio.get_running_loop())
        started.set()
        await box["stop"].wait()
        feeder.cancel()
        await server.stop()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(30)
    yield box["url"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(10)


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def shot(driver: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))


def test_console_pages_live_view_playback_and_review(console_url: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(console_url + "/")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".station .bar span"))
    assert "rpi_orcasound_lab" in browser.find_element(By.TAG_NAME, "h2").text
    shot(browser, "status")

    browser.get(console_url + "/live")
    first = wait_for(lambda: browser.execute_script("return window.liveState.cols"))
    wait_for(lambda: browser.execute_script("return window.liveState.cols") > first + 8)
    assert browser.execute_script("return window.liveState.scores.length") > 0
    time.sleep(2)
    shot(browser, "live")

    browser.get(console_url + "/detections")
    cards = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".det"))
    assert len(cards) == 2
    audio = cards[0].find_element(By.TAG_NAME, "audio")
    browser.execute_script("arguments[0].muted = true; arguments[0].play();", audio)
    wait_for(lambda: browser.execute_script("return arguments[0].currentTime", audio) > 0.2)
    shot(browser, "detections")

    det_id = cards[1].get_attribute("data-id")
    form = cards[1].find_element(By.CSS_SELECTOR, "form.review")
    form.find_element(By.CSS_SELECTOR, "input[value='yes']").click()
    form.find_element(By.NAME, "tags").send_keys("S1;call")
    form.find_element(By.NAME, "comments").send_keys("clear calls")
    form.find_element(By.NAME, "moderator").send_keys("ana")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait_for(lambda: "saved" in form.find_element(By.CLASS_NAME, "result").text)
    export = requests.get(console_url + "/api/reviews/export", timeout=5).json()
    assert [(r["id"], r["SRKWFound"], r["tags"]) for r in export] == [(det_id, "yes", "S1;call")]
