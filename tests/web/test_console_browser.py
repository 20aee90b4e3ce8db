"""The console in headless Chromium (Debian's chromium + chromium-driver, via selenium).

Loads each page of a fleet of twelve stations against a real server over real
files: the overview (the default page) has a row per station, the live
spectrogram advances under its axes with the threshold drawn over the score
bars, a clip plays, a review without a verdict is refused in the page, and a
review submitted in the form is in the export. With
LISTENER_CONSOLE_SCREENSHOTS=<folder> it also saves a PNG of each page there
(docs/console/ holds the committed ones).
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
from support.console_support import feed_live, fleet_views, make_view

from listener.web.console import Console
from listener.web.server import WebServer

pytestmark = [pytest.mark.slow, needs_browser]
SHOTS = os.environ.get("LISTENER_CONSOLE_SCREENSHOTS")
SKIPPED = "config/stations/rpi_typo.yaml"
TYPO = f"{SKIPPED}:4: stream.nod: unknown key (did you mean 'node'?)"


@pytest.fixture
def console_url(tmp_path: Path) -> Iterator[str]:
    """A fleet's console over real files, the first station's live feed playing, on its
    own loop in a thread."""
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
                           console=Console([view, *fleet_views(tmp_path / "fleet", 11)],
                                           tick_s=0.5, skipped=[(SKIPPED, TYPO)]))
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


STATION = "rpi_orcasound_lab"


def test_console_pages_live_view_playback_and_review(console_url: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    browser.get(console_url + "/")  # a fleet opens on its overview
    rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr"))
    assert len(rows) == 12 and rows[0].get_attribute("data-station") == STATION
    failing = browser.find_element(By.CSS_SELECTOR, "tr[data-station='rpi_port_townsend']")
    assert "latest.txt: HTTP 404" in failing.find_element(By.CSS_SELECTOR, "td.err").text
    assert len(rows[0].find_elements(By.CSS_SELECTOR, ".cells span")) == 96
    assert "12 stations" in browser.find_element(By.ID, "fleet-summary").text
    assert "1 silent" in browser.find_element(By.ID, "fleet-summary").text
    dead = browser.find_element(By.CSS_SELECTOR, "tr[data-station='rpi_sunset_bay'] td.level")
    assert "err" in dead.get_attribute("class") and dead.text == "-120.0 dBFS silent"
    assert "1 outside model levels" in browser.find_element(By.ID, "fleet-summary").text
    quiet = browser.find_element(By.CSS_SELECTOR, "tr[data-station='rpi_andrews_bay'] td.level")
    assert "warn" in quiet.get_attribute("class") and quiet.text == "-95.0 dBFS below"
    assert "below the levels orcahello-srkw trained at (-81 to -1 dBFS)" in \
        quiet.get_attribute("title")
    assert "1 config file(s) not loaded" in browser.find_element(By.ID, "fleet-summary").text
    skipped = browser.find_element(By.ID, "skipped")
    assert skipped.is_displayed() and SKIPPED in skipped.text and "did you mean" in skipped.text
    shot(browser, "overview")

    browser.get(f"{console_url}/status?station={STATION}")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".station .bar span"))
    assert [h.text for h in browser.find_elements(By.TAG_NAME, "h2")] == [STATION]
    shot(browser, "status")

    browser.get(f"{console_url}/live?station={STATION}")
    first = wait_for(lambda: browser.execute_script("return window.liveState.cols"))
    wait_for(lambda: browser.execute_script("return window.liveState.cols") > first + 8)
    assert browser.execute_script("return window.liveState.scores.length") > 0
    if SHOTS:  # a fuller picture for the docs
        wait_for(lambda: browser.execute_script("return window.liveState.cols") > 200, 60)
    time.sleep(2)
    axis = {k: [t.text for t in browser.find_elements(By.CSS_SELECTOR, f"#{k} .tick")]
            for k in ("spec-y", "score-y", "time-x")}
    assert axis["spec-y"] == ["0", "2", "4", "6", "8", "10"]
    assert axis["score-y"] == ["1", "0.5", "0"] and axis["time-x"][0] == "0 s"
    assert "−60 s" in axis["time-x"]
    assert browser.find_element(By.CSS_SELECTOR, "#spec-y .unit").text == "kHz"
    assert threshold_over_bars(browser)
    shot(browser, "live")

    browser.get(f"{console_url}/detections?station={STATION}")
    cards = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".det"))
    assert len(cards) == 2
    audio = cards[0].find_element(By.TAG_NAME, "audio")
    browser.execute_script("arguments[0].muted = true; arguments[0].play();", audio)
    wait_for(lambda: browser.execute_script("return arguments[0].currentTime", audio) > 0.2)
    shot(browser, "detections")

    det_id = cards[1].get_attribute("data-id")
    form = cards[1].find_element(By.CSS_SELECTOR, "form.review")
    form.find_element(By.NAME, "comments").send_keys("clear calls")
    form.find_element(By.CSS_SELECTOR, "button").click()  # no verdict chosen
    result = form.find_element(By.CLASS_NAME, "result")
    wait_for(lambda: "Choose yes, no or don't know" in result.text)
    assert requests.get(console_url + "/api/reviews/export", timeout=5).json() == []
    form.find_element(By.CSS_SELECTOR, "input[value='yes']").click()
    form.find_element(By.NAME, "tags").send_keys("S1;call")
    form.find_element(By.NAME, "moderator").send_keys("ana")
    form.find_element(By.CSS_SELECTOR, "button").click()
    wait_for(lambda: "saved" in form.find_element(By.CLASS_NAME, "result").text)
    export = requests.get(console_url + "/api/reviews/export", timeout=5).json()
    assert [(r["id"], r["SRKWFound"], r["tags"]) for r in export] == [(det_id, "yes", "S1;call")]

    browser.get(console_url + "/nowhere")
    assert "Not found" in browser.find_element(By.TAG_NAME, "h2").text


def threshold_over_bars(browser: Any) -> bool:
    """Whether, on the threshold's row of the score strip, the dashed line shows where a
    bar rises above the threshold (the line is drawn after the bars)."""
    return bool(browser.execute_script("""
        const c = document.querySelector('#scores'), ctx = c.getContext('2d');
        const t = window.liveState.threshold, y = Math.round(c.height - t * c.height);
        const line = ctx.getImageData(0, y, c.width, 1).data;
        const above = ctx.getImageData(0, y - 4, c.width, 1).data;  // inside a tall bar
        let hits = 0;
        for (let x = 0; x < c.width; x++) {
          const bar = above[4 * x] > 200 && above[4 * x + 2] < 100;  // yellow
          const light = line[4 * x] > 230 && line[4 * x + 2] > 230;  // the line's colour
          if (bar && light) hits++;
        }
        return hits > 0;"""))
