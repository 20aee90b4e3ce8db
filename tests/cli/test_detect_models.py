"""``listener detect --models``: two models on a real recording, decoded once, compared."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from support.tiny_models import save_resnet_snapshot, save_tiny_audio_classifier

from listener.cli.main import main

DATA = Path(__file__).resolve().parents[1] / "data"
CLIP = DATA / "clips" / "orcasoundlab_1594154121.mp3"
SEGMENT = DATA / "hls" / "rpi_orcasound_lab" / "1594150218" / "live001.ts"  # ~10 s AAC


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                    reason="the transformers extra is not installed "
                           "(pip install 'listener[transformers]')")
def test_detect_models_prints_a_side_by_side_table(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    save_resnet_snapshot(tmp_path / "resnet")
    save_tiny_audio_classifier(tmp_path / "pods")
    cfg = tmp_path / "station.yaml"
    cfg.write_text("""
station: {id: rpi_orcasound_lab}
detection: {clip_s: 4.0}
models:
  - {id: srkw-resnet, weights: resnet, device: cpu, rule: {global_threshold: 1}}
  - id: pods-ai
    backend: transformers
    weights: pods
    role: shadow
    window_s: 1.5
    hop_s: 1.0
    device: cpu
    rule: {strategy: mean_top_k, top_k: 2, top_k_threshold: 0.0}
""", encoding="utf-8")
    out = tmp_path / "out.json"
    rc = main(["detect", str(SEGMENT), "--config", str(cfg), "--models", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "srkw-resnet" in text and "pods-ai" in text
    assert "agreement srkw-resnet vs pods-ai" in text
    doc = json.loads(out.read_text())
    res, pods_doc = doc["models"]
    assert res["labels"] == ["other", "call"] and len(pods_doc["labels"]) == 7
    # Each model on its own window grid over the same decoded audio.
    assert [w["start_s"] for w in res["windows"][:3]] == [0.0, 1.0, 2.0]
    assert [w["end_s"] - w["start_s"] for w in pods_doc["windows"][:2]] == [1.5, 1.5]
    assert {c["start_s"] for c in res["clips"]} == {c["start_s"] for c in pods_doc["clips"]}
    # top_k_threshold 0 fires every clip; the table shows each fired clip's label.
    assert all(c["detected"] and c["label"] in pods_doc["labels"] for c in pods_doc["clips"])
    (pair,) = doc["agreement"]
    assert len(res["clips"]) >= 2
    assert pair["both"] + pair["only_a"] + pair["only_b"] + pair["neither"] == len(res["clips"])
    assert pair["only_a"] == 0  # pods-ai fires every clip


def test_detect_models_rejects_an_unknown_id(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "station.yaml"
    cfg.write_text("station: {id: s}\nmodels:\n  - {id: a}\n", encoding="utf-8")
    rc = main(["detect", str(CLIP), "--config", str(cfg), "--models", "b"])
    assert rc == 1
    assert "unknown model id(s) ['b']" in capsys.readouterr().err
