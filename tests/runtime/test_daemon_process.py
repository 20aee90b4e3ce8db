"""``listener run`` as a real subprocess: the real ResNet18 path end to end, SIGTERM
mid-stream (twice), and a config error that refuses to start."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import torch
from safetensors.torch import save_file
from support.daemon_support import tone_recording, ts_segments
from support.hls_server import LiveHlsServer

from listener.model.network import build_model
from listener.runtime.resume import StateStore

NODE = "rpi_proc"
FOLDER = 1_600_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _weights(path: Path) -> Path:
    torch.manual_seed(0)
    model = build_model("resnet18")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _windows_scored(port: int) -> float:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return -1.0
    for line in text.splitlines():
        if line.startswith("listener_inference_windows_scored_total{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.slow
def test_sigterm_mid_stream_with_the_real_model(tmp_path: Path) -> None:
    wav = tone_recording(tmp_path / "a.wav", 120.0, [])
    segments = ts_segments(wav, tmp_path / "hls")
    _weights(tmp_path / "r18.safetensors")  # named in the config below
    port = _free_port()
    with LiveHlsServer() as server:
        server.start_folder(NODE, FOLDER)
        for data, dur in segments:
            server.publish(NODE, data, dur)
        cfg = tmp_path / "station.yaml"
        cfg.write_text(f"""
station: {{id: {NODE}, name: Process test, longitude: -123.17, latitude: 48.55}}
stream:
  kind: orcasound
  base_url: {server.base_url}
  node: {NODE}
  poll_interval_s: 0.2
  start_segments_back: 100
model:
  weights: r18.safetensors
  architecture: resnet18
  batch_size: 4
  cpu_threads: 1
outputs:
  jsonl: {{path: out/events.jsonl}}
metrics: {{host: 127.0.0.1, port: {port}}}
state: {{dir: state}}
""")
        typo = tmp_path / "typo.yaml"  # left out by --keep-going: listed on the overview
        typo.write_text("station: {id: other}\nstream: {kind: orcasound, nod: x}\n")
        proc = subprocess.Popen([sys.executable, "-m", "listener", "run", "--keep-going",
                                 "--config", str(cfg), "--config", str(typo)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 90
            while _windows_scored(port) < 8 and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
            assert _windows_scored(port) >= 8
            ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
            assert ready.status_code == 200, ready.text
            skipped = requests.get(f"http://127.0.0.1:{port}/api/overview", timeout=5).json()
            assert [s["file"] for s in skipped["skipped"]] == [str(typo)]
            assert "did you mean 'node'" in skipped["skipped"][0]["error"]
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)  # a second signal is harmless
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out
    assert "stopping: SIGTERM" in out
    assert "already stopping" in out
    assert "resnet18" in out
    assert StateStore(tmp_path / "state", NODE).path.exists() or "clip" not in out


def test_invalid_config_refuses_to_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("station:\n  id: x\nmodel:\n  device: tpu\n")
    run = subprocess.run([sys.executable, "-m", "listener", "run", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    check = subprocess.run([sys.executable, "-m", "listener", "check-config", str(bad)],
                           capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and check.returncode == 1
    assert f"{bad}:4: model.device" in run.stderr
    assert run.stderr.strip() == check.stderr.strip()
    assert "Traceback" not in run.stderr


def test_missing_weights_refuse_to_start(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("station: {id: x}\nstream: {kind: orcasound, node: rpi_x, "
                   "base_url: 'http://127.0.0.1:9'}\nmodel: {weights: nowhere.safetensors}\n"
                   "metrics: {enabled: false}\n")
    run = subprocess.run([sys.executable, "-m", "listener", "run", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert "nowhere.safetensors" in run.stderr
    assert "Traceback" not in run.stderr
