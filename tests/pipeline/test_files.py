"""Scoring whole files: the frontend off the model's thread gives the same scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from listener.audio.decode import FileDecoder, find_ffmpeg
from listener.config import ModelConfig, default_config
from listener.model.scorer import Scorer
from listener.pipeline.files import iter_scored_windows, probe_duration

DATA = Path(__file__).parents[1] / "data"


def test_features_in_the_producer_equal_waves_in_the_model_thread() -> None:
    path = DATA / "hls" / "rpi_orcasound_lab" / "1594150218" / "live001.ts"
    cfg = default_config()
    scorer = Scorer(ModelConfig(architecture="resnet18", device="cpu", batch_size=4),
                    allow_random_weights=True)
    seen: list[torch.Tensor] = []

    def score_features(x: torch.Tensor) -> np.ndarray:
        seen.append(x)
        return scorer.score_features(x)

    def waves_path() -> list:
        return list(iter_scored_windows(path, cfg, scorer.score_waves, scorer.frontend,
                                        FileDecoder(path), 4))

    def features_path() -> list:
        return list(iter_scored_windows(path, cfg, scorer.score_waves, scorer.frontend,
                                        FileDecoder(path), 4, score_features=score_features))

    a, b = [w for w, _ in waves_path()], [w for w, _ in features_path()]
    assert [w.start_s for w in a] == [w.start_s for w in b] == [float(i) for i in range(9)]
    np.testing.assert_allclose([w.score for w in b], [w.score for w in a], rtol=0, atol=1e-6)
    assert [x.shape for x in seen] == [(4, 1, 256, 312), (4, 1, 256, 312), (1, 1, 256, 312)]


def test_each_window_carries_its_level_at_the_models_rate(tmp_path: Path) -> None:
    import soundfile as sf

    from listener.audio.level import FLOOR_DBFS, window_levels_dbfs
    from listener.pipeline.files import score_file

    rate = 48_000  # resampled to the model's 20 kHz before the level is taken
    t = np.arange(5 * rate) / rate
    tone = 0.1 * np.sqrt(2) * np.sin(2 * np.pi * 1000 * t)  # -20 dBFS
    tone[3 * rate:] = 0.0  # then digital silence
    sf.write(tmp_path / "tone.wav", tone.astype(np.float32), rate, subtype="FLOAT")
    cfg = default_config()
    scorer = Scorer(ModelConfig(architecture="resnet18", device="cpu", batch_size=4),
                    allow_random_weights=True)
    res = score_file(tmp_path / "tone.wav", cfg, scorer.score_waves, scorer.frontend)
    assert len(res.levels_dbfs) == len(res.windows) == 4
    np.testing.assert_allclose(res.levels_dbfs[:2], [-20.0, -20.0], atol=0.05)
    assert -24.0 < res.levels_dbfs[2] < -22.0  # half tone, half silence: 3 dB down
    assert res.levels_dbfs[3] == FLOOR_DBFS
    assert res.to_json({})["windows"][0]["level_dbfs"] == -20.0
    assert window_levels_dbfs(np.zeros((2, 40_000), np.float32)).tolist() == [FLOOR_DBFS] * 2


def test_probe_duration_reads_a_relative_name_with_a_colon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import soundfile as sf

    name = "2024-06-01T12:00:00Z.wav"
    sf.write(tmp_path / name, np.zeros(8000, np.float32), 8000)
    monkeypatch.chdir(tmp_path)
    duration = probe_duration(name, find_ffmpeg())
    assert duration is not None and abs(duration - 1.0) < 0.01
