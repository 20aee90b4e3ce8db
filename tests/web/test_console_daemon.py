"""End to end: a daemon fed by the loopback HLS server, its console in headless Chromium.

The live spectrogram advances while segments arrive, the detection's clip
plays, a review submitted in the page is in the export, and the coverage
ledger holds the scored stream time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from support.browser import chromium, needs_browser, wait_for
from support.daemon_support import (
    ToneScorer,
    publish_in_background,
    run_daemon_until,
    station_config,
    tone_recording,
    ts_segments,
)
from support.hls_server import LiveHlsServer

from listener.config import ClipSinkConfig, JsonlSinkConfig, OutputsConfig

pytestmark = [pytest.mark.slow, needs_browser]


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver

NODE = "rpi_test"
FOLDER = 1_600_000_000


def test_daemon_console_live_clip_review_and_coverage(tmp_path: Path, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    wav = tone_recording(tmp_path / "tone.wav", 250.0, [(75.0, 85.0)])
    segments = ts_segments(wav, tmp_path / "hls")
    with LiveHlsServer() as server:
        server.start_folder(NODE, FOLDER)
        for data, dur in segments[:3]:
            server.publish(NODE, data, dur)
        rest = iter(segments[3:])

        def publish() -> bool:
            nxt = next(rest, None)
            if nxt is not None:
                server.publish(NODE, *nxt)
            return nxt is not None

        publish_in_background(publish, 1.0)
        outputs = OutputsConfig(jsonl=JsonlSinkConfig(path=tmp_path / "events.jsonl"),
                                clips=ClipSinkConfig(dir=tmp_path / "clips", before_s=2.0,
                                                     after_s=2.0), log=True)
        cfg = station_config(server.base_url, NODE, tmp_path, outputs=outputs)
        seen: dict[str, Any] = {}

        def in_browser(daemon: Any) -> None:
            url = daemon.probes.url
            browser.get(url + "/live")
            first = wait_for(lambda: browser.execute_script("return window.liveState.cols"))
            wait_for(lambda: browser.execute_script("return window.liveState.cols") > first + 8)
            browser.get(url + "/detections")
            [card] = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".det"))
            audio = card.find_element(By.TAG_NAME, "audio")
            browser.execute_script("arguments[0].muted = true; arguments[0].play();", audio)
            wait_for(lambda: browser.execute_script("return arguments[0].currentTime",
                                                    audio) > 0.2)
            form = card.find_element(By.CSS_SELECTOR, "form.review")
            form.find_element(By.CSS_SELECTOR, "input[value='no']").click()
            form.find_element(By.NAME, "comments").send_keys("a test tone")
            form.find_element(By.CSS_SELECTOR, "button").click()
            wait_for(lambda: "saved" in form.find_element(By.CLASS_NAME, "result").text)
            seen["export"] = requests.get(url + "/api/reviews/export", timeout=5).json()
            seen["coverage"] = requests.get(
                f"{url}/api/coverage?from={FOLDER}&to={FOLDER + 600}", timeout=5).json()
            seen["status"] = requests.get(url + "/api/status", timeout=5).json()
            browser.get(url + "/")
            wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, ".station"))

        run_daemon_until(
            cfg, ToneScorer(),
            lambda d: d.emitter.events_emitted > 0 and any((tmp_path / "clips").glob("*.png")),
            timeout_s=90, during=in_browser)

    [record] = seen["export"]
    assert record["SRKWFound"] == "no" and record["comments"] == "a test tone"
    assert record["timestamp"] == "2020-09-13T12:27:40.000Z" and record["location"]["id"] == NODE
    assert seen["coverage"]["scored_s"] >= 120
    [status] = seen["status"]["stations"]
    assert status["station_id"] == NODE and status["windows_scored"] >= 120
    assert status["model"]["id"] and status["stream_url"].endswith(f"/{NODE}/latest.txt")
