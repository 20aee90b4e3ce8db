"""Model backends loaded for real: a tiny transformers classifier and a ResNet snapshot folder."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from support.tiny_models import PODS_LABELS, save_resnet_snapshot, save_tiny_audio_classifier

from listener.config import Config, parse_config
from listener.errors import ConfigError, ModelLoadError
from listener.model.backends import load_backend
from listener.model.backends.check import plan_models, plan_station
from listener.model.checkpoints import load_model
from listener.model.snapshot import read_snapshot

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None,
    reason="the transformers extra is not installed (pip install 'listener[transformers]')")


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("the transformers extra is not installed (pip install "
                    "'listener[transformers]')")
    return save_tiny_audio_classifier(tmp_path_factory.mktemp("tf") / "pods")


def _planned(text: str, path: str = "<string>") -> Config:
    """Parse, then plan the models: where their checks run (once, before any audio)."""
    return plan_station(parse_config(text, path=path)).cfg


def _cfg(models_yaml: str, extra: str = "") -> str:
    return f"station: {{id: s}}\n{extra}models:\n{models_yaml}"


@needs_transformers
def test_transformers_backend_windows_rate_and_labels(tiny_classifier: Path) -> None:
    cfg = _planned(_cfg(
        f"  - {{id: r, backend: orcahello-resnet}}\n"
        f"  - {{id: pods, backend: transformers, weights: '{tiny_classifier}', role: shadow,"
        f" target_labels: [resident, transient], batch_size: 2, device: cpu}}\n"))
    plan = plan_models(cfg)[1]
    assert (plan.window_s, plan.hop_s) == (3.0, 2.0)  # OrcaHello's transformer segments
    backend = load_backend(plan)
    assert backend.labels == PODS_LABELS
    assert backend.sample_rate == 16000
    rng = np.random.default_rng(0)
    native = rng.standard_normal((2, 3 * 44100)).astype(np.float32)  # stereo, 44.1 kHz
    wave = backend.prepare(native, 44100)
    assert wave.shape == (3 * 16000,)
    # The pipelines' batched step: row for row the per-window result, bit for bit.
    other = rng.standard_normal((2, 3 * 44100)).astype(np.float32)
    rows = backend.prepare_batch([native, other], 44100)
    assert rows.shape == (2, 3 * 16000) and rows.dtype == np.float32
    assert np.array_equal(rows[0], wave) and np.array_equal(rows[1], backend.prepare(other, 44100))
    batch = np.stack([wave, wave * 0.5, wave[::-1].copy()])
    probs = backend.predict(batch)  # 3 windows in batches of 2
    assert probs.shape == (3, len(PODS_LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(backend.predict(batch[:1]), probs[:1], atol=1e-5)
    assert backend.info["backend"] == "transformers"
    assert cfg.model.model_id == "r"  # cfg.model is the primary


@needs_transformers
@pytest.mark.parametrize(("damage", "error_type"), [
    ("shapes", "RuntimeError"), ("garbage", "SafetensorError")])
def test_transformers_folder_that_cannot_load_names_folder_and_model(
        tmp_path: Path, damage: str, error_type: str) -> None:
    folder = save_tiny_audio_classifier(tmp_path / "pods")
    weights = folder / "model.safetensors"
    if damage == "shapes":  # same config.json, weights of another head size
        save_tiny_audio_classifier(tmp_path / "other", labels=("a", "b", "c"))
        shutil.copy(tmp_path / "other" / "model.safetensors", weights)
    else:
        weights.write_bytes(b"garbage" * 10)
    cfg = _planned(_cfg(f"  - {{id: r}}\n  - {{id: pods, backend: transformers, "
                        f"weights: '{folder}', role: shadow, device: cpu}}\n"))
    with pytest.raises(ModelLoadError) as err:
        load_backend(plan_models(cfg)[1])
    assert f"model pods: {folder}: " in str(err.value) and error_type in str(err.value)


def test_resnet_snapshot_folder_reads_architecture_and_thresholds(tmp_path: Path) -> None:
    folder = save_resnet_snapshot(tmp_path / "orcahello-hub", config={
        "architectures": ["ResNet18ForOrcaHello"], "inference": {
            "threshold": 0.7, "min_num_positive_calls_threshold": 5},
        "id2label": {"0": "negative", "1": "srkw"}})
    cfg = _planned(f"station: {{id: s}}\nmodel: {{weights: '{folder}', device: cpu}}\n")
    assert (cfg.detection.local_threshold, cfg.detection.global_threshold) == (0.7, 5)
    _model, info = load_model(folder)
    assert (info.architecture, info.layout) == ("resnet18", "hub")
    assert info.path == folder / "model.safetensors"
    plan = plan_models(cfg)[0]
    assert plan.labels == ("negative", "srkw") and plan.targets == ("srkw",)
    backend = load_backend(plan)
    wave = np.random.default_rng(1).standard_normal(40000).astype(np.float32)
    probs = backend.predict(np.stack([wave, wave]))
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    # The YAML's own thresholds win over config.json's.
    cfg2 = _planned(f"station: {{id: s}}\nmodel: {{weights: '{folder}'}}\n"
                        f"detection: {{local_threshold: 0.4}}\n")
    assert (cfg2.detection.local_threshold, cfg2.detection.global_threshold) == (0.4, 5)


@pytest.mark.parametrize(("config", "message"), [
    ({"global_threshold": 2.9}, "global_threshold must be a whole number of windows, got 2.9"),
    ({"inference": {"min_num_positive_calls_threshold": True}},
     "inference.min_num_positive_calls_threshold must be a whole number of windows, got true"),
    ({"local_threshold": True}, "local_threshold must be a number from 0 to 1, got true"),
    ({"inference": {"threshold": "0.5"}}, 'inference.threshold must be a number from 0 to 1, '
                                          'got "0.5"'),
])
def test_snapshot_thresholds_are_never_coerced(tmp_path: Path, config: dict,
                                               message: str) -> None:
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as err:
        read_snapshot(tmp_path)
    assert str(err.value) == f"{tmp_path / 'config.json'}: {message}"


def test_snapshot_global_threshold_may_be_an_integral_float(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"global_threshold": 3.0,
                                                      "local_threshold": 1}))
    snap = read_snapshot(tmp_path)
    assert (snap.global_threshold, snap.local_threshold) == (3, 1.0)
    assert type(snap.global_threshold) is int


def test_resnet_snapshot_architecture_clash_is_refused(tmp_path: Path) -> None:
    folder = save_resnet_snapshot(tmp_path / "hub", config={"model_type": "resnet50"})
    with pytest.raises(ModelLoadError) as err:
        load_model(folder)
    # The folder's config.json named it, not the YAML's model.architecture (auto).
    assert str(err.value) == (f"{folder / 'config.json'} names resnet50 but "
                              f"model.safetensors holds resnet18 weights")


@pytest.mark.parametrize(("models", "key", "message"), [
    ("  - {id: a}\n  - {id: a, role: shadow}\n", "models", "two models have the id 'a'"),
    ("  - {id: a, role: shadow}\n", "models", "exactly one model must have role 'primary'"),
    ("  - {id: a, target_labels: [resident]}\n", "models.0.target_labels",
     "unknown label(s) ['resident']; the model's labels are ['other', 'call']"),
])
def test_model_list_errors_name_the_key(models: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        _planned(_cfg(models), path="station.yaml")
    assert "station.yaml:" in str(err.value) and f"{key}:" in str(err.value)
    assert message in str(err.value)


def test_folder_without_config_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"models\.1\.weights: .*folder without config.json"):
        _planned(_cfg(f"  - {{id: a}}\n  - {{id: b, backend: transformers, role: shadow,"
                          f" weights: '{tmp_path / 'empty'}'}}\n"))


@needs_transformers
def test_unknown_target_label_of_a_transformer_lists_its_labels(tiny_classifier: Path) -> None:
    with pytest.raises(ConfigError, match=r"models\.1\.target_labels: .*\['srkw'\].*'resident'"):
        _planned(_cfg(f"  - {{id: a}}\n  - {{id: b, backend: transformers, role: shadow, "
                          f"weights: '{tiny_classifier}', target_labels: [srkw]}}\n"))


def test_missing_extra_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import listener.model.backends.check as check

    real = importlib.util.find_spec
    monkeypatch.setattr(check.importlib.util, "find_spec",
                        lambda name, *a: None if name == "transformers" else real(name, *a))
    with pytest.raises(ConfigError, match=r"models\.1\.backend: .*listener\[transformers\]"):
        _planned(_cfg(f"  - {{id: a}}\n  - {{id: b, backend: transformers, role: shadow,"
                          f" weights: '{tmp_path}'}}\n"))


def test_model_and_models_together_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"either 'model'.*or 'models'"):
        _planned(_cfg("  - {id: a}\n", extra="model: {device: cpu}\n"))


def test_single_model_section_is_a_list_of_one() -> None:
    cfg = _planned("station: {id: s}\nmodel: {model_id: srkw-v1}\n")
    (entry,) = cfg.model_entries()
    assert (entry.id, entry.backend, entry.role) == ("srkw-v1", "orcahello-resnet", "primary")
    (plan,) = plan_models(cfg)
    assert plan.labels == ("other", "call") and plan.targets == ("call",)
    assert (plan.window_s, plan.hop_s, plan.rule.global_threshold) == (2.0, 1.0, 3)
