"""End to end: reviews saved in the console become training data and a promote-or-not line.

A real console (HTTP on 127.0.0.1) over real detection events and clip
files: a moderator answers yes, no and don't know; the export and the
station's ``events.reviews.jsonl`` both feed ``listener train --reviews``;
``listener evaluate`` then compares the new model with the starting one on
the exported records.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
from prometheus_client import CollectorRegistry
from support.console_support import make_view
from training.recipe_support import RATE, TINY_YAML, call, listener_cli, noise, squeak

from listener.model.bundled import declared_model_id
from listener.web.console import Console
from listener.web.server import WebServer

pytestmark = pytest.mark.slow


def _listener(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return listener_cli(*args, ok=(0, 1))  # evaluate exits 1 when a check fails


def _review_in_console(folder: Path) -> list[dict]:
    """Three detections reviewed yes / no / don't know through the HTTP API; the export."""
    async def main() -> list[dict]:
        view = make_view(folder, detections=3)
        console = Console([view], bind_host="127.0.0.1", tick_s=0.2)
        server = WebServer(CollectorRegistry(), "127.0.0.1", 0, lambda: (True, "ok"),
                           console=console)
        await server.start()
        try:
            get = lambda url, **kw: asyncio.to_thread(  # noqa: E731
                requests.request, "GET", url, timeout=5, **kw)
            dets = (await get(server.url + "/api/detections")).json()["detections"]
            csrf = {"X-CSRF-Token": (await get(server.url + "/api/session")).json()["csrf"]}
            for det, verdict in zip(sorted(dets, key=lambda d: d["timestamp"]),
                                    ("yes", "no", "don't know"), strict=True):
                r = await asyncio.to_thread(
                    requests.post, f"{server.url}/api/detections/{det['id']}/review",
                    json={"SRKWFound": verdict, "moderator": "ana"}, headers=csrf, timeout=5)
                assert r.status_code == 201, r.text
            return (await get(server.url + "/api/reviews/export")).json()  # type: ignore
        finally:
            await server.stop()
    return asyncio.run(main())


def test_reviews_to_a_model_and_a_promote_line(tmp_path: Path) -> None:
    export = _review_in_console(tmp_path)
    assert [r["SRKWFound"] for r in export] == ["yes", "no", "don't know"]
    rng = np.random.default_rng(3)
    clips = tmp_path / "clips"
    # The clip files hold real hydrophone audio; put a call into the "yes" clip and the
    # site's squeak into the "no" clip, so the labels mean something to a model.
    yes_clip = noise(6.0, rng) + np.pad(call(1.5, rng), (20000, 70000))
    for rec, wave in zip(export, (yes_clip, squeak(6.0, rng), noise(6.0, rng)), strict=True):
        sf.write(clips / Path(rec["audioUri"]).name, wave, RATE, format="FLAC")
    (clips / "reviews-orcahello.json").write_text(json.dumps(export), encoding="utf-8")
    data = tmp_path / "data"
    for folder in (data / "calls" / "s", data / "background" / "n"):
        folder.mkdir(parents=True)
    for i in range(2):
        sf.write(data / "calls" / "s" / f"c{i}.wav", call(1.5, rng), RATE)
        sf.write(data / "background" / "n" / f"b{i}.wav", noise(4.0, rng), RATE)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_YAML, encoding="utf-8")
    start, new = tmp_path / "start.safetensors", tmp_path / "new.safetensors"
    common = ["--config", cfg, "--cache", tmp_path / "cache", "--batch-size", "4",
              "--epochs", "1", "--steps", "2", "--val-fraction", "0.5", "--no-aac"]
    assert _listener("train", data, "--out", start, *common).returncode == 0
    # The export (clips next to it) and the station's own reviews file, both at once.
    res = _listener("train", data, "--init", start, "--reviews",
                    clips / "reviews-orcahello.json", "--reviews",
                    tmp_path / "events.reviews.jsonl", "--review-clips", clips,
                    "--out", new, "--model-id", "srkw-site-v2", *common)
    assert res.returncode == 0, res.stderr
    assert declared_model_id(new) == "srkw-site-v2"  # the console and /metrics use it
    new.with_suffix(".md").rename(tmp_path / "card.md")  # the metadata alone declares it
    assert declared_model_id(new) == "srkw-site-v2"
    (tmp_path / "card.md").rename(new.with_suffix(".md"))
    assert not new.with_name(new.name + ".ckpt.pt").exists()  # removed after success
    card = new.with_suffix(".md").read_text()
    assert "- Model id: `srkw-site-v2`" in card
    assert "Reviews: 2 yes (calls), 2 no (hard negatives), 2 skipped" in card
    assert "reviews" in card  # the reviewed clips are a source of their own
    ev = _listener("evaluate", clips / "reviews-orcahello.json", "--config", cfg,
                   "--weights", start, "--weights", new, "--out", tmp_path / "eval",
                   "--bootstrap", "20")
    assert "promote 2:new.safetensors over 1:start.safetensors: " in ev.stdout, ev.stdout
