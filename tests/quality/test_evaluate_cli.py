"""``listener evaluate`` as a user runs it, on hand-written labels and real audio."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from support.cli import run_cli

from listener.events.png import PNG_SIGNATURE
from listener.model.lineage import Lineage, digest
from listener.model.network import build_model

DATA = Path(__file__).parents[1] / "data"


CALL = DATA / "train" / "calls" / "Biggs_song_08.wav"


def _networks(tmp_path: Path, plain: str) -> tuple[Path, Path]:
    """One random network twice: as ``plain`` (no metadata) and as ``seen.safetensors``,
    which records that it trained on CALL, at window levels of -126..-101 dBFS (far
    below every file here)."""
    torch.manual_seed(2)  # the model boundary: random weights, real everything else
    tensors = {k: v.contiguous() for k, v in build_model("resnet18").state_dict().items()}
    weights, seen = tmp_path / plain, tmp_path / "seen.safetensors"
    save_file(tensors, str(weights))
    recipe = json.dumps({"augment": {"gain_db": [-100.0, -75.0]}})
    save_file(tensors, str(seen), metadata={**Lineage(frozenset({digest(CALL)})).to_metadata(),
                                            "recipe": recipe})
    return weights, seen


def _clips(tmp_path: Path) -> Path:
    """A labelled folder: CALL as a call, a humpback grunt as a no-call."""
    data = tmp_path / "data"
    (data / "calls").mkdir(parents=True)
    (data / "nocalls").mkdir()
    shutil.copy(CALL, data / "calls")
    shutil.copy(DATA / "train" / "background" / "Humpback_grunt_04.wav", data / "nocalls")
    return data


def test_evaluate_reports_metrics_plots_and_label_problems(tmp_path: Path) -> None:
    weights, seen = _networks(tmp_path, "r18.safetensors")
    data = _clips(tmp_path)
    for name in ("recording.wav", "recording.txt"):
        shutil.copy(DATA / "labels" / name, data)
    out = tmp_path / "eval"
    res = run_cli("evaluate", data, "--weights", weights, "--weights", seen, "--out", out,
                  "--target-recall", "0.5", "--bootstrap", "50")
    # The Audacity track has two bad lines: reported by file and line, the rest evaluated.
    assert res.returncode == 1, res.stderr
    assert "recording.txt:5:" in res.stderr and "recording.txt:6:" in res.stderr
    doc = json.loads((out / "evaluation.json").read_text())
    first, second = doc["models"].values()
    # Biggs_song_08.wav is a call clip shorter than global_threshold (3) seconds: the
    # rule can never detect it, so it is set apart, not counted as a miss.
    assert first["clips"]["n"] == 2 and first["clips"]["positives"] == 1
    assert [a["file"].endswith("Biggs_song_08.wav") for a in first["short_call_clips"]] == [True]
    assert "set apart: call clip" in res.stdout
    assert "promote 2:seen.safetensors over 1:r18.safetensors: no" in res.stdout
    assert "only 3 source file(s) feed the bootstrap" in res.stderr
    trained = ("2:seen.safetensors: 1 of the 3 evaluated files trained it (e.g. "
               f"{data / 'calls' / 'Biggs_song_08.wav'}): its figures here are optimistic")
    assert trained in res.stderr and any(w.startswith(trained) for w in doc["warnings"])
    assert "1:r18.safetensors:" not in res.stderr  # it records no lineage: nothing to say
    rows = (out / "scores.csv").read_text().splitlines()
    assert rows[0] == "model,file,level,start_s,end_s,label,score,decision,level_dbfs"
    assert any(",clip," in r for r in rows) and any(",window," in r for r in rows)
    window_levels = [float(r.split(",")[-1]) for r in rows if ",window," in r]
    assert window_levels and all(-100.0 < v < 0.0 for v in window_levels)
    n = len(window_levels) // 2  # each model scored the same windows
    above = (f"{n} of {n} windows are above the levels model 2:seen.safetensors trained at "
             "(-126 to -101 dBFS): its scores there are untested")
    assert above in res.stderr and above in doc["warnings"], doc["warnings"]
    assert first["windows"] == second["windows"]  # same windows, same model: same figures
    assert first["recommended"]["target"] == "recall"
    assert "windows: n=" in res.stdout and "ROC-AUC" in res.stdout
    for png in ("pr_clips.png", "roc_windows.png", "threshold_clips.png",
                "histogram_windows_1.png", "histogram_clips_2.png"):
        assert (out / png).read_bytes().startswith(PNG_SIGNATURE)


def test_evaluate_config_models_measure_levels_and_lineage(tmp_path: Path) -> None:
    """``--config`` with ``models:`` (each file decoded once for every model) gives the
    same level column and warnings as ``--weights``: before, it had neither."""
    _networks(tmp_path, "plain.safetensors")
    data = _clips(tmp_path)
    cfg = tmp_path / "station.yaml"
    cfg.write_text("station: {id: s}\nmodels:\n"
                   "  - {id: plain, weights: plain.safetensors, role: primary}\n"
                   "  - {id: seen, weights: seen.safetensors, role: shadow}\n")
    out = tmp_path / "eval"
    res = run_cli("evaluate", data, "--config", cfg, "--out", out, "--bootstrap", "50")
    assert res.returncode == 0, res.stderr
    rows = [r.split(",") for r in (out / "scores.csv").read_text().splitlines()[1:]]
    windows = {m: [float(r[-1]) for r in rows if r[0] == m and r[2] == "window"]
               for m in ("1:plain", "2:seen")}
    assert windows["1:plain"] and windows["1:plain"] == windows["2:seen"]
    assert all(-100.0 < v < 0.0 for v in windows["1:plain"])
    n = len(windows["2:seen"])
    above = (f"{n} of {n} windows are above the levels model 2:seen trained at "
             "(-126 to -101 dBFS): its scores there are untested")
    doc = json.loads((out / "evaluation.json").read_text())
    assert above in res.stderr and above in doc["warnings"], res.stderr
    assert "2:seen: 1 of the 2 evaluated files trained it" in res.stderr
    assert "1:plain:" not in res.stderr  # no recipe, no lineage: nothing to say
