"""The scorer: speed options change nothing, batching changes nothing, devices are picked right."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support.calibrated import calibrated_model, synthetic_waves

from listener.config import FrontendConfig, ModelConfig
from listener.errors import ModelLoadError
from listener.model.frontend import Frontend
from listener.model.scorer import Scorer, select_device

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def features() -> torch.Tensor:
    """Seven realistic model inputs ``(7, 1, 256, 312)`` in dB (about -100..+30).

    Three are the old fastai pipeline's own spectrograms of Sunset Bay audio,
    four come from our frontend on synthetic audio.
    """
    ref = torch.load(DATA / "sunset_bay_fastai_audio_reference.pt", weights_only=True)
    real = [ref[f"segment_{i}"]["mel_standardized"] for i in range(3)]
    with torch.no_grad():
        ours = Frontend(FrontendConfig())(torch.from_numpy(synthetic_waves(4)))
    x = torch.cat([torch.stack(real), ours]).float()
    assert x.shape == (7, 1, 256, 312) and -120 < x.min() < -50 and 0 < x.max() < 60
    return x


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, features: torch.Tensor) -> Path:
    """A resnet18 whose BatchNorm statistics were estimated on dB inputs, like a trained one.

    With default statistics (mean 0, var 1) dB-scale activations blow up and
    every score is exactly 0 or 1, which would make the tolerance tests vacuous.
    """
    model = calibrated_model(features)
    path = tmp_path_factory.mktemp("w") / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def cfg(weights: Path | None, **kw: object) -> ModelConfig:
    return ModelConfig(weights=weights, device="cpu", **kw)  # type: ignore[arg-type]


def test_scores_are_probabilities_and_not_saturated(weights: Path,
                                                    features: torch.Tensor) -> None:
    scores = Scorer(cfg(weights)).score_features(features)
    assert scores.shape == (7,) and scores.dtype == np.float64
    assert np.all((scores >= 0) & (scores <= 1))
    assert np.sum((scores > 0.01) & (scores < 0.99)) >= 3, scores


@pytest.mark.parametrize("fuse", [True, False])
def test_batch_of_seven_equals_one_by_one(weights: Path, features: torch.Tensor,
                                          fuse: bool) -> None:
    scorer = Scorer(cfg(weights, fuse_batchnorm=fuse))
    batched = scorer.score_features(features)
    single = np.concatenate([scorer.score_features(features[i:i + 1]) for i in range(7)])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-5)
    chunked = Scorer(cfg(weights, fuse_batchnorm=fuse, batch_size=3)).score_features(features)
    np.testing.assert_allclose(chunked, batched, rtol=0, atol=1e-5)


def test_fused_equals_unfused(weights: Path, features: torch.Tensor) -> None:
    fused = Scorer(cfg(weights, fuse_batchnorm=True, channels_last=False))
    plain = Scorer(cfg(weights, fuse_batchnorm=False, channels_last=False))
    np.testing.assert_allclose(fused.score_features(features), plain.score_features(features),
                               rtol=0, atol=1e-5)


def test_channels_last_equals_contiguous(weights: Path, features: torch.Tensor) -> None:
    a = Scorer(cfg(weights, channels_last=True)).score_features(features)
    b = Scorer(cfg(weights, channels_last=False)).score_features(features)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_score_waves_is_frontend_then_network(weights: Path) -> None:
    scorer = Scorer(cfg(weights, batch_size=2))
    waves = synthetic_waves(3, seed=1)
    with torch.no_grad():
        feats = Frontend(FrontendConfig())(torch.from_numpy(waves))
    np.testing.assert_allclose(scorer.score_waves(waves), scorer.score_features(feats),
                               rtol=0, atol=1e-6)
    assert scorer.score_waves(np.zeros((0, 40_000), np.float32)).shape == (0,)


def test_bad_shapes_are_refused(weights: Path) -> None:
    scorer = Scorer(cfg(weights))
    with pytest.raises(ValueError, match=r"\(batch, 1, n_mels, frames\), got \(1, 256, 312\)"):
        scorer.score_features(torch.zeros(1, 256, 312))
    with pytest.raises(ValueError, match=r"\(batch, samples\), got \(40000,\)"):
        scorer.score_waves(np.zeros(40_000, np.float32))


def test_info_describes_the_weights(weights: Path) -> None:
    info = Scorer(cfg(weights)).info
    assert info["architecture"] == "resnet18" and info["weights"] == str(weights)
    assert len(info["sha256"]) == 64 and info["layout"] == "listener"
    assert info["device"] == "cpu" and info["dtype"] == "float32"  # auto: float32 on a CPU
    assert info["precision"] == "float32"
    assert info["random"] is False and info["parameter_count"] == 11_699_138
    assert info["id"] == "orcahello-srkw"


def test_weights_are_required_unless_random_is_allowed() -> None:
    with pytest.raises(ModelLoadError, match=r"model\.weights is required"):
        Scorer(cfg(None))


def test_random_weights_are_seeded_and_marked() -> None:
    a = Scorer(cfg(None, architecture="resnet18"), allow_random_weights=True, seed=3)
    b = Scorer(cfg(None, architecture="resnet18"), allow_random_weights=True, seed=3)
    c = Scorer(cfg(None, architecture="resnet18"), allow_random_weights=True, seed=4)
    assert a.info["random"] is True and a.info["weights"] is None
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x))
        assert not torch.equal(a.model(x), c.model(x))
    state = torch.random.get_rng_state()
    Scorer(cfg(None, architecture="resnet18"), allow_random_weights=True, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched


def test_random_auto_is_the_production_architecture() -> None:
    scorer = Scorer(cfg(None), allow_random_weights=True)
    assert scorer.info["architecture"] == "resnet50"


def test_cpu_threads(weights: Path, restore_threads: None) -> None:
    Scorer(cfg(weights, cpu_threads=1))
    assert torch.get_num_threads() == 1


def test_missing_weights_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"nope\.safetensors: weights file not found"):
        Scorer(cfg(tmp_path / "nope.safetensors"))


def test_select_device() -> None:
    assert select_device("auto", cuda_available=False) == torch.device("cpu")
    assert select_device("auto", cuda_available=True) == torch.device("cuda")
    assert select_device("cpu", cuda_available=True) == torch.device("cpu")
    assert select_device("cuda", cuda_available=True) == torch.device("cuda")
    with pytest.raises(ModelLoadError, match="no CUDA device"):
        select_device("cuda", cuda_available=False)
    with pytest.raises(ModelLoadError, match="'tpu'"):
        select_device("tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_close_to_cpu_fp32(weights: Path, features: torch.Tensor) -> None:
    gpu = Scorer(ModelConfig(weights=weights, device="cuda"))  # auto = float16 on CUDA
    assert gpu.info["dtype"] == "float16"
    cpu = Scorer(cfg(weights))
    np.testing.assert_allclose(gpu.score_features(features), cpu.score_features(features),
                               atol=2e-2)
