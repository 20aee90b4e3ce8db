"""End to end: a site's squeak that the model fires on is learnt away with ``--background``.

A starting model learnt tonal calls against noise from data in which some
squeaky site audio had been filed as calls (a tiny frontend keeps it fast); a
station's own audio carries a mechanical squeak (4.4-5.2 kHz chirps with a
harmonic, every 1-2 s) that the starting model takes for calls. After
``listener train --init start --background SITE`` the squeak scores below
threshold while calls mixed into the same squeaky noise are still detected;
the same fine-tune without ``--background`` (the control) still fires.
Everything goes through the CLI: train, then ``listener evaluate`` on fresh
audio (other seeds) with both models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from training.recipe_support import TINY_YAML, call, listener_cli, noise, squeak, write_wav

from listener.digests import file_digest
from listener.model.metadata import safetensors_metadata

pytestmark = pytest.mark.slow


def _world(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    data, old = root / "data", root / "old_data"
    for i in range(6):
        for d in (data, old):
            write_wav(d / "calls" / "synth" / f"c{i}.wav", call(1.5, rng))
            write_wav(d / "background" / "noise" / f"b{i}.wav", noise(6.0, rng))
        # an old labelling mistake: squeaky site audio filed under calls
        write_wav(old / "calls" / "squeaky" / f"w{i}.wav", squeak(3.0, rng))
    site = root / "site"
    for i in range(5):  # the station's own audio: its noise and its squeak
        write_wav(site / f"site{i}.wav", squeak(12.0, rng))
    test = root / "test"  # fresh audio for the before/after figures
    for i in range(6):
        bed = squeak(3.0, rng)
        write_wav(test / "nocalls" / f"squeak{i}.wav", bed)
        mixed = bed.copy()
        mixed[10000:40000] += call(1.5, rng, level=0.06)
        write_wav(test / "calls" / f"call_in_squeak{i}.wav", mixed)
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY_YAML + "detection: {global_threshold: 1}\n", encoding="utf-8")
    return {"data": data, "old": old, "site": site, "test": test, "cfg": cfg}


def test_background_teaches_the_site_squeak_and_keeps_calls(tmp_path: Path) -> None:
    w = _world(tmp_path)
    start, adapted, control = (tmp_path / f"{n}.safetensors" for n in ("start", "adapted",
                                                                       "control"))
    common = ["--config", w["cfg"], "--cache", tmp_path / "cache", "--batch-size", "8",
              "--val-fraction", "0.34", "--seed", "1", "--snr-db", "0", "20", "--no-aac"]
    listener_cli("train", w["old"], "--out", start, "--epochs", "10", "--steps", "16",
              "--lr", "2e-3", *common)
    tune = ["--init", start, "--epochs", "4", "--steps", "12", "--lr", "5e-4", *common]
    res = listener_cli("train", w["data"], "--background", w["site"], "--background-max-score",
                    "1.0", "--out", adapted, *tune)
    # The control: the same fine-tune without the site's audio.
    listener_cli("train", w["data"], "--out", control, *tune)
    card = adapted.with_suffix(".md").read_text()
    assert "Site audio" in card and "site:site" in card
    # The fine-tune beat its start on the per-epoch draw, and again on fresh draws.
    meta = safetensors_metadata(adapted)
    # The starting weights are named by their digest, wherever --init pointed.
    assert meta["init_sha256"] == file_digest(start)
    assert f"fine-tuned from `start.safetensors` (sha256 {file_digest(start)[:16]})" in card
    check = json.loads(meta["fine_tune_check"])
    assert check["holds"] and len(check["kept_each"]) == 5, check
    assert "fine-tune check: on 5 fresh draws" in res.stderr and "the gain holds" in res.stderr
    assert "- Fine-tune check: on 5 fresh draws" in card
    ev = listener_cli("evaluate", w["test"], "--config", w["cfg"], "--weights", start,
                   "--weights", adapted, "--out", tmp_path / "eval", "--bootstrap", "50")
    listener_cli("evaluate", w["test"], "--config", w["cfg"], "--weights", control,
              "--out", tmp_path / "eval_control", "--bootstrap", "50")
    doc = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    before, after = (doc["models"][k]["windows"]["confusion"] for k in
                     ("1:start.safetensors", "2:adapted.safetensors"))
    doc = json.loads((tmp_path / "eval_control" / "evaluation.json").read_text())
    unadapted = next(iter(doc["models"].values()))["windows"]["confusion"]
    fpr = [c["fp"] / (c["fp"] + c["tn"]) for c in (before, after, unadapted)]
    print(res.stdout, ev.stdout, f"squeak windows above threshold: {fpr}")
    assert fpr[0] >= 0.5, "the starting model should fire on the squeak (test premise)"
    assert fpr[1] <= 0.2, ev.stdout
    assert after["recall"] >= 0.8, ev.stdout
    assert fpr[2] >= 0.5, "without --background the squeak should still fire"
    assert "promote 2:adapted.safetensors over 1:start.safetensors: yes" in ev.stdout
