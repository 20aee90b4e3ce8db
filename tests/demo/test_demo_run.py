"""``listener demo``: its working folder (named, removed unless --keep), ``--config`` (a
several-model station served by the demo node) and the model id it shows."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from listener.demo.run import _follow_events, run_demo
from listener.model.bundled import BUNDLED_WEIGHTS

DEMO_ID = "listener-demo-resnet18"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # loopback only
        return str(resp.read().decode("utf-8"))


def _poll_status(url: str, seen: dict[str, Any], stop: threading.Event) -> None:
    """The status and /metrics once the model is loaded (build info set)."""
    while not stop.is_set():
        try:
            metrics = _get(f"{url}/metrics")
            if "listener_build_info{" in metrics:
                seen["status"] = json.loads(_get(f"{url}/api/status"))
                seen["metrics"] = metrics
                return
        except OSError:
            pass
        stop.wait(0.3)


@pytest.mark.slow
def test_demo_keep_keeps_its_folder_and_shows_the_declared_model_id() -> None:
    lines: list[str] = []
    seen: dict[str, Any] = {}
    stop = threading.Event()

    def say(text: str) -> None:
        lines.append(text)
        where = re.match(r"console: (http://127\.0\.0\.1:\d+)/ ", text)
        if where:  # said inside the event loop: ask from another thread
            threading.Thread(target=_poll_status, args=(where[1], seen, stop),
                             daemon=True).start()

    try:
        assert run_demo(say, duration_s=6, port=0, keep=True) == 0
    finally:
        stop.set()
    (folder_line,) = [x for x in lines if x.startswith("working folder: ")]
    workdir = Path(folder_line.split()[2])
    assert lines[0] == folder_line  # said first, before any work
    try:
        assert workdir.is_dir() and (workdir / "hls").is_dir()
        assert lines[-1] == f"kept {workdir}"
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    # The console and /metrics name the bundled model by the id its card declares.
    assert DEMO_ID in json.dumps(seen["status"]) and "orcahello-srkw" not in json.dumps(
        seen["status"])
    assert f'model_id="{DEMO_ID}"' in seen["metrics"]


@pytest.mark.slow
def test_demo_serves_a_several_model_station_and_removes_its_folder(tmp_path: Path) -> None:
    cfg = tmp_path / "two.yaml"
    cfg.write_text(f"""
station: {{id: demo-two, name: Two models}}
detection: {{clip_s: 20}}
models:
  - {{id: resnet-a, weights: {BUNDLED_WEIGHTS}, device: cpu}}
  - {{id: resnet-b, weights: {BUNDLED_WEIGHTS}, device: cpu, role: secondary,
     rule: {{global_threshold: 1}}}}
""", encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "listener", "demo", "--config", str(cfg),
                          "--duration", "20", "--port", "0"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    where = re.search(r"^working folder: (\S+) \(removed at the end; --keep keeps it\)$", out,
                      re.MULTILINE)
    assert where is not None, out
    assert not Path(where[1]).exists() and f"removed {where[1]}" in out
    assert "models:  resnet-a (primary), resnet-b (secondary)" in out
    assert "station: demo-two" in out
    # Both models scored the demo node's L pod calls and reached the events file.
    assert "(model resnet-a)" in out and "(model resnet-b)" in out
    done = re.search(r"^done in \d+ s: .*events resnet-a (\d+), resnet-b (\d+)$", out,
                     re.MULTILINE)
    assert done is not None and int(done[2]) >= 1, out  # every model's events counted


def test_demo_refuses_a_bad_config_before_making_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("station: {id: s}\nmodel: {wieghts: x}\n", encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "listener", "demo", "--config", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "bad.yaml" in res.stderr and "wieghts" in res.stderr
    assert "working folder" not in res.stdout  # nothing made, nothing to clean


def test_the_follower_says_an_event_written_just_before_the_stop(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    said: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        follower = asyncio.create_task(_follow_events(path, said.append, stop))
        path.write_text(json.dumps({"kind": "detection", "timestamp": "A"}) + "\n")
        while not said:
            await asyncio.sleep(0.05)
        with path.open("a") as fh:  # the daemon's last event, written during its shutdown
            fh.write(json.dumps({"kind": "encounter_end", "timestamp": "B"}) + "\n")
        stop.set()
        await asyncio.wait_for(follower, 5.0)

    asyncio.run(main())
    assert [line.split(":")[0] for line in said] == ["event detection", "event encounter_end"]
