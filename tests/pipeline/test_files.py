"""Scoring whole files: the frontend off the model's thread gives the same scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from listener.audio.decode import FileDecoder
from listener.config import ModelConfig, default_config
from listener.model.scorer import Scorer
from listener.pipeline.files import iter_scored_windows

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

    a, b = waves_path(), features_path()
    assert [w.start_s for w in a] == [w.start_s for w in b] == [float(i) for i in range(9)]
    np.testing.assert_allclose([w.score for w in b], [w.score for w in a], rtol=0, atol=1e-6)
    assert [x.shape for x in seen] == [(4, 1, 256, 312), (4, 1, 256, 312), (1, 1, 256, 312)]
