"""The band-normalised input (``listener train --band-norm``): what it cancels, and
that every loader and scoring path builds it from the weights alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support.calibrated import calibrated_model, synthetic_waves

from listener.config import FrontendConfig, ModelConfig
from listener.model.checkpoints import load_model
from listener.model.frontend import Frontend
from listener.model.network import BAND_NORM_KEY, build_model, fuse_batchnorm, subtract_band_median
from listener.model.scorer import Scorer


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    with torch.no_grad():
        return Frontend(FrontendConfig())(torch.from_numpy(synthetic_waves(6)))


@pytest.fixture(scope="module")
def reference(features: torch.Tensor) -> torch.nn.Module:
    """A band-normalised resnet18 with BatchNorm statistics of normalised inputs."""
    return calibrated_model(subtract_band_median(features), band_norm=True)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, reference: torch.nn.Module) -> Path:
    path = tmp_path_factory.mktemp("bn") / "bandnorm.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    return path


def test_a_steady_offset_per_band_cancels_and_a_transient_stays() -> None:
    x = torch.randn(2, 1, 8, 50)
    offsets = torch.linspace(-60, 20, 8).reshape(1, 1, 8, 1)
    np.testing.assert_allclose(subtract_band_median(x + offsets), subtract_band_median(x),
                               atol=1e-4)
    x[..., 3, 10:14] += 30.0  # a call crossing band 3 in 4 of 50 frames
    assert subtract_band_median(x)[..., 3, 10:14].min() > 20


def test_gain_changes_nothing_with_band_norm_and_much_without(features: torch.Tensor) -> None:
    """A gain is a dB offset of the spectrogram."""
    normed = calibrated_model(subtract_band_median(features), band_norm=True)
    plain = calibrated_model(features)
    with torch.no_grad():
        for model, moves in ((normed, False), (plain, True)):
            a, b = model(features), model(features - 30.0)
            assert (not torch.allclose(a, b, atol=1e-2)) is moves, (a, b)
            if not moves:
                torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_the_marker_travels_with_the_weights(weights: Path, features: torch.Tensor,
                                             reference: torch.nn.Module) -> None:
    assert next(iter(build_model("resnet18", band_norm=True).state_dict())) == BAND_NORM_KEY
    assert BAND_NORM_KEY not in build_model("resnet18").state_dict()
    model, info = load_model(weights)
    assert model.band_norm and info.architecture == "resnet18"
    with torch.no_grad():
        torch.testing.assert_close(model(features), reference(features))
    # The same weights without the marker are a plain network: a different one.
    plain = weights.with_name("plain.safetensors")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()
               if k != BAND_NORM_KEY}, str(plain))
    unmarked, _ = load_model(plain)
    assert not unmarked.band_norm


@pytest.mark.parametrize(("fuse", "channels_last"), [(False, False), (True, True)])
def test_the_scorer_applies_it(weights: Path, features: torch.Tensor, fuse: bool,
                               channels_last: bool, reference: torch.nn.Module) -> None:
    with torch.no_grad():
        expected = torch.softmax(reference(features), dim=1)[:, 1].double().numpy()
    scorer = Scorer(ModelConfig(weights=weights, device="cpu", fuse_batchnorm=fuse,
                                channels_last=channels_last))
    scores = scorer.score_features(features)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-5)
    assert np.ptp(scores) > 0.01, scores  # not saturated: the comparison means something


def test_fusing_keeps_the_band_norm(weights: Path, features: torch.Tensor) -> None:
    model, _ = load_model(weights)
    with torch.no_grad():
        before = model(features)
        fuse_batchnorm(model)
        torch.testing.assert_close(model(features), before, atol=1e-4, rtol=1e-4)
