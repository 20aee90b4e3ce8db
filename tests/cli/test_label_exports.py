"""``detect --raven / --audacity``, with one model or ``--models``: files written, folders
where several tracks need them, a file name refused up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import run_cli, run_cli_process

from listener.model.bundled import BUNDLED_WEIGHTS

DATA = Path(__file__).parents[1] / "data"
CLIP = DATA / "clips" / "orcasoundlab_1594154121.mp3"
SHORT = DATA / "catalog" / "S04-J-3_24576hz.wav"
LPOD = BUNDLED_WEIGHTS.parent / "lpod_orcasound_22050hz.wav"  # 43 s of calls



def test_audacity_with_several_files_refuses_a_file_name(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    res = run_cli("detect", CLIP, SHORT, "--audacity", out)
    assert res.returncode == 2
    assert f"--audacity {out}" in res.stderr and "need a folder" in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()  # refused before scoring: no folder named out.txt


def test_audacity_with_several_files_writes_one_track_each(tmp_path: Path) -> None:
    out = tmp_path / "labels"
    res = run_cli("detect", CLIP, SHORT, "--audacity", out, "--quiet")
    assert res.returncode == 0, res.stderr
    assert {p.name for p in out.iterdir()} == {f"{CLIP.stem}.txt", f"{SHORT.stem}.txt"}


def _two_models(tmp_path: Path) -> Path:
    cfg = tmp_path / "two.yaml"
    cfg.write_text(f"""
station: {{id: s}}
detection: {{clip_s: 20}}
models:
  - {{id: srkw-a, weights: {BUNDLED_WEIGHTS}, device: cpu, rule: {{global_threshold: 1}}}}
  - {{id: srkw-b, weights: {BUNDLED_WEIGHTS}, device: cpu, role: shadow,
     rule: {{strategy: mean_top_k, top_k: 2, top_k_threshold: 0.0}}}}
""", encoding="utf-8")
    return cfg


@pytest.mark.slow
def test_detect_models_writes_raven_and_audacity_and_clean_json(tmp_path: Path) -> None:
    raven, tracks = tmp_path / "sel.txt", tmp_path / "tracks"
    res = run_cli_process("detect", LPOD, "--config", _two_models(tmp_path), "--models",
                          "--json", "-", "--raven", raven, "--audacity", tracks)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)  # stdout: the JSON alone; the table went to stderr
    assert [m["id"] for m in doc["models"]] == ["srkw-a", "srkw-b"]
    assert "agreement srkw-a vs srkw-b" in res.stderr
    # Each window's level at the model's rate, as single-model detect gives it.
    levels = [w["level_dbfs"] for m in doc["models"] for w in m["windows"]]
    assert levels and all(-60.0 < v < -10.0 for v in levels), levels
    rows = [line.split("\t") for line in raven.read_text().splitlines()]
    assert rows[0][-1] == "Model"
    by_model = {m: [r for r in rows[1:] if r[-1] == m] for m in ("srkw-a", "srkw-b")}
    assert by_model["srkw-a"] and by_model["srkw-b"]
    assert all(r[7] == LPOD.name and r[8] == "call" for r in rows[1:])
    # mean_top_k at 0 fires every clip: one selection spanning each whole clip.
    clips_b = [c for c in doc["models"][1]["clips"] if c["detected"]]
    assert len(by_model["srkw-b"]) == len(clips_b)
    names = sorted(p.name for p in tracks.iterdir())
    assert names == [f"{LPOD.stem}.srkw-a.txt", f"{LPOD.stem}.srkw-b.txt"]
    first = (tracks / names[0]).read_text().splitlines()[0].split("\t")
    assert float(first[0]) < float(first[1]) and first[2].startswith("call ")


def test_detect_models_with_several_tracks_refuses_an_audacity_file_name(tmp_path: Path) -> None:
    res = run_cli("detect", CLIP, "--config", _two_models(tmp_path), "--models",
               "--audacity", tmp_path / "a.txt")
    assert res.returncode == 2 and "need a folder" in res.stderr
    assert not (tmp_path / "a.txt").exists()
