"""Commands that score fall back to the bundled demo model, say so on stderr, and keep
stdout for the data alone; the model id shown is the one the checkpoint declares."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.cli import run_cli, run_cli_process

from listener.model.bundled import BUNDLED_WEIGHTS

DATA = Path(__file__).parents[1] / "data"
CLIP = DATA / "clips" / "orcasoundlab_1594154121.mp3"
NOTICE = "weights: bundled demo model"
DEMO_ID = "listener-demo-resnet18"



def test_detect_without_weights_uses_the_bundled_model_and_pipes_clean_json() -> None:
    res = run_cli_process("detect", str(CLIP), "--json", "-")
    assert res.returncode == 0, res.stderr
    # stdout is the JSON alone: `listener detect F --json - | python -m json.tool` works.
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=res.stdout,
                          capture_output=True, text=True, timeout=60)
    assert tool.returncode == 0, tool.stderr
    doc = json.loads(res.stdout)
    assert doc["model"]["id"] == DEMO_ID
    assert doc["model"]["weights"] == str(BUNDLED_WEIGHTS)
    # The notice and the human summary went to stderr, once each.
    assert res.stderr.count(NOTICE) == 1 and "NOT the OrcaHello production model" in res.stderr
    assert "highest score" in res.stderr and "Traceback" not in res.stderr


def test_detect_summary_stays_on_stdout_without_json_dash(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    res = run_cli("detect", str(CLIP), "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "highest score" in res.stdout and NOTICE not in res.stdout
    assert NOTICE in res.stderr
    assert json.loads(out.read_text())["model"]["id"] == DEMO_ID


def test_config_model_id_wins_over_the_declared_one(tmp_path: Path) -> None:
    cfg = tmp_path / "station.yaml"
    cfg.write_text(f"station: {{id: s}}\nmodel: {{weights: {BUNDLED_WEIGHTS}, "
                   "model_id: my-srkw}\n", encoding="utf-8")
    res = run_cli_process("detect", str(CLIP), "--config", str(cfg), "--json", "-", "--quiet")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["model"]["id"] == "my-srkw"
    assert NOTICE not in res.stderr  # weights were given: no fallback, no notice


@pytest.mark.slow
def test_evaluate_without_weights_uses_the_bundled_model(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "calls").mkdir(parents=True)
    (data / "nocalls").mkdir()
    shutil.copy(DATA / "train" / "calls" / "Biggs_song_08.wav", data / "calls")
    shutil.copy(DATA / "train" / "background" / "Humpback_grunt_04.wav", data / "nocalls")
    out = tmp_path / "eval"
    res = run_cli("evaluate", str(data), "--out", str(out), "--bootstrap", "20")
    assert res.returncode == 0, res.stderr
    assert res.stderr.count(NOTICE) == 1 and NOTICE not in res.stdout
    (model,) = json.loads((out / "evaluation.json").read_text())["models"].values()
    assert model["model"]["id"] == DEMO_ID and model["model"]["weights"] == str(BUNDLED_WEIGHTS)


def test_features_needs_no_weights_at_all(tmp_path: Path) -> None:
    # `features` writes the model's input, so it never loads a network: no weights,
    # no fallback notice, no error.
    out = tmp_path / "f.npy"
    res = run_cli("features", str(CLIP), "--start", "0", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert out.is_file() and "weights" not in res.stderr


def test_detect_warns_when_a_file_lies_outside_the_levels_the_model_trained_at(
        tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    noise = np.random.default_rng(0).standard_normal(20_000 * 6)
    for name, dbfs in (("quiet.wav", -95.0), ("usual.wav", -40.0)):  # demo: -81 to -1 dBFS
        sf.write(tmp_path / name, (noise * 10 ** (dbfs / 20)).astype(np.float32), 20_000,
                 subtype="FLOAT")
    out = tmp_path / "out.json"
    res = run_cli("detect", str(tmp_path / "quiet.wav"), str(tmp_path / "usual.wav"),
               "--json", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    said = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert said == [f"warning: {tmp_path / 'quiet.wav'}: 5 of 5 windows are below the levels "
                    f"model {DEMO_ID} trained at (-81 to -1 dBFS): its scores there are untested"]
    quiet, usual = json.loads(out.read_text())
    assert {w["level_dbfs"] for w in quiet["windows"]} == {-95.0}
    assert all(abs(w["level_dbfs"] + 40.0) < 0.2 for w in usual["windows"])
