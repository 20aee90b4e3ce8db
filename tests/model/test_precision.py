"""model.precision: the per-host decision, the bf16 body, and its measured error bound."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from support.calibrated import save_calibrated

from listener.config import (
    Config,
    ModelConfig,
    StationConfig,
    default_config,
    parse_config,
    with_precision,
)
from listener.errors import ConfigError, ModelLoadError
from listener.model import precision as prec
from listener.model.frontend import Frontend
from listener.model.precision import cpu_flags, cpu_has_native_bf16, plan_execution
from listener.model.scorer import ModelInfo, Scorer
from listener.pipeline.files import score_file

DATA = Path(__file__).parents[1] / "data"
# The bundled trained ResNet18 (listener/data/demo_resnet18.md).
DEMO_WEIGHTS = Path(__file__).parents[2] / "listener" / "data" / "demo_resnet18.safetensors"
NATIVE_BF16 = cpu_has_native_bf16()
SHARED = Path(__file__).parents[3] / "shared" / "data"


@pytest.fixture(scope="module")
def frontend() -> Frontend:
    return Frontend()


@pytest.fixture(scope="module")
def calibration(frontend: Frontend) -> torch.Tensor:
    """Real spectrograms (Sunset Bay's three, four catalogue calls) to set BatchNorm statistics."""
    ref = torch.load(DATA / "sunset_bay_fastai_audio_reference.pt", weights_only=True)
    feats = [ref[f"segment_{i}"]["mel_standardized"] for i in range(3)]
    for name in ("S01-JL-1_44100hz.wav", "S04-J-3_24576hz.wav", "S10-JKL-4_25057hz.wav",
                 "S12-J-4_36000hz.wav"):
        audio, rate = soundfile.read(DATA / "catalog" / name, dtype="float32")
        wave = frontend.prepare_batch(audio[None, :rate], rate)
        with torch.no_grad():
            feats.append(frontend(torch.from_numpy(wave))[0])
    return torch.stack(feats).float()


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory, calibration: torch.Tensor) -> Path:
    return save_calibrated(tmp_path_factory.mktemp("w") / "r18.safetensors", calibration)


@pytest.fixture(scope="module")
def recording_features(frontend: Frontend) -> torch.Tensor:
    """Every 2 s window, one a second, of the real 30 s ONC recording: (29, 1, 256, 312)."""
    audio, rate = soundfile.read(DATA / "recordings" / "onc_naxys_hydrophone_44000hz.wav",
                                 dtype="float32")
    windows = np.stack([audio[i * rate:(i + 2) * rate] for i in range(len(audio) // rate - 1)])
    with torch.no_grad():
        return frontend(torch.from_numpy(frontend.prepare_batch(windows, rate)))


def test_auto_is_float16_on_cuda_and_float32_on_cpu() -> None:
    assert plan_execution("auto", "cpu").precision == "float32"
    cuda = plan_execution("auto", "cuda")
    assert cuda.dtype == torch.float16 and cuda.fuse_batchnorm and cuda.channels_last
    plain = plan_execution("float32", "cpu", fuse_batchnorm=False, channels_last=False)
    assert not plain.fuse_batchnorm and not plain.channels_last  # honoured in float32


def test_bfloat16_on_cpu_needs_native_support() -> None:
    plan = plan_execution("bfloat16", "cpu", fuse_batchnorm=False, channels_last=False,
                          native_bf16=True)
    # Reduced precision forces folding (before the cast) and the fast layout.
    assert plan.dtype == torch.bfloat16 and plan.fuse_batchnorm and plan.channels_last
    # Judged by decisions, not a score bound: every stage bf16 unless configured.
    assert plan.float32_stages == prec.BF16_FLOAT32_STAGES == ()
    with pytest.raises(ModelLoadError, match=r"no native bfloat16.*avx512_bf16.*use float32"):
        plan_execution("bfloat16", "cpu", native_bf16=False)


def test_float16_is_cuda_only_and_bf16_cuda_needs_ampere() -> None:
    with pytest.raises(ModelLoadError, match="float16 needs a CUDA device"):
        plan_execution("float16", "cpu")
    bf16 = plan_execution("bfloat16", "cuda", cuda_bf16=True)
    assert bf16.dtype == torch.bfloat16 and bf16.float32_stages == ()
    # float16's 10-bit mantissa needs no float32 stages; float32 has none to keep.
    assert plan_execution("float16", "cuda").float32_stages == ()
    assert plan_execution("float32", "cpu", float32_stages=["layer1"]).float32_stages == ()
    chosen = plan_execution("bfloat16", "cuda", cuda_bf16=True, float32_stages=["layer2.0"])
    assert chosen.float32_stages == ("layer2.0",)
    with pytest.raises(ModelLoadError, match=r"compute capability 8\.0"):
        plan_execution("bfloat16", "cuda", cuda_bf16=False)
    with pytest.raises(ModelLoadError, match="'int8'"):
        plan_execution("int8", "cpu")


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\n"
                    "processor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(info) == frozenset({"fpu", "avx2", "avx512f", "amx_bf16", "amx_tile"})
    assert cpu_flags(tmp_path / "missing") is None
    assert cpu_has_native_bf16(frozenset({"avx512_bf16"})) is True
    assert cpu_has_native_bf16(frozenset({"avx512f", "avx2"})) is False  # AVX-512 alone: emulated


def test_old_fp16_flag_maps_onto_precision(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="listener.config"):
        assert ModelConfig(fp16=True).precision == "auto"  # type: ignore[call-arg]
        assert ModelConfig(fp16=False).precision == "float32"  # type: ignore[call-arg]
        kept = ModelConfig(fp16=False, precision="bfloat16")  # type: ignore[call-arg]
    assert kept.precision == "bfloat16"
    assert sum("fp16 is deprecated" in r.getMessage() for r in caplog.records) == 3
    cfg = parse_config("station: {id: s}\nmodel: {fp16: false}\n")
    assert cfg.model.precision == "float32"
    with pytest.raises(ConfigError, match="precision"):
        parse_config("station: {id: s}\nmodel: {precision: half}\n")
    with pytest.raises(ConfigError, match="fp16 must be true or false"):
        parse_config("station: {id: s}\nmodel: {fp16: maybe}\n")


def test_float32_stages_come_from_the_config(weights: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The host check answers "native bf16" here: this test is about the wiring.
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda flags=None: True)
    default = Scorer(ModelConfig(weights=weights, device="cpu", precision="bfloat16"))
    assert default.plan.float32_stages == prec.BF16_FLOAT32_STAGES == ()
    precise = ModelConfig(weights=weights, device="cpu", precision="bfloat16",
                          float32_stages=list(prec.BF16_PRECISE_STAGES))
    assert Scorer(precise).info.float32_stages == ("layer1.0", "layer4")
    fastest = parse_config("station: {id: s}\nmodel: {precision: bfloat16, "
                           f"weights: {weights}, device: cpu, float32_stages: []}}\n")
    scorer = Scorer(fastest.model)
    assert scorer.plan.float32_stages == () and scorer.info.float32_stages == ()
    one = ModelConfig(weights=weights, device="cpu", precision="bfloat16",
                      float32_stages=["layer2.1"])
    assert Scorer(one).info.float32_stages == ("layer2.1",)
    with pytest.raises(ConfigError, match="float32_stages"):
        parse_config("station: {id: s}\nmodel: {float32_stages: [conv1]}\n")


def test_with_precision_overrides_the_config() -> None:
    cfg = default_config()
    assert with_precision(cfg, None) is cfg
    assert with_precision(cfg, "bfloat16").model.precision == "bfloat16"
    with pytest.raises(ConfigError, match="got 'half'"):
        with_precision(cfg, "half")


def test_info_is_typed_and_still_a_mapping(weights: Path) -> None:
    info = Scorer(ModelConfig(weights=weights, device="cpu")).info
    assert isinstance(info, ModelInfo) and info.precision == "float32"
    block = {**info, "extra": 1}  # how the daemon builds the events' model block
    assert block["id"] == "orcahello-srkw" and block["dtype"] == block["precision"] == "float32"
    assert info.get("sha256") == info.sha256 and info.get("nope") is None
    assert json.loads(json.dumps(info.to_dict()))["parameter_count"] == 11_699_138
    with pytest.raises(AttributeError):
        info.precision = "float16"  # type: ignore[misc]


def test_bfloat16_refused_before_loading_on_a_cpu_without_it(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda flags=None: False)
    # The weights file does not exist: the refusal comes first, and says why.
    with pytest.raises(ModelLoadError, match="no native bfloat16"):
        Scorer(ModelConfig(weights=tmp_path / "absent.pt", device="cpu", precision="bfloat16"))


def test_bfloat16_without_float32_stages_converts_every_stage(
        monkeypatch: pytest.MonkeyPatch, weights: Path, recording_features: torch.Tensor) -> None:
    """The conversion itself, on any CPU (emulated bf16 where not native: slow, so 2 windows)."""
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda flags=None: True)
    bf16 = Scorer(ModelConfig(weights=weights, device="cpu", precision="bfloat16",
                              fuse_batchnorm=False, channels_last=False))
    assert bf16.info.precision == "bfloat16" and bf16.info.fuse_batchnorm
    assert bf16.info.float32_stages == ()
    # Every residual stage, both ends included, runs bf16.
    for stage in (bf16.model.layer1, bf16.model.layer2, bf16.model.layer3, bf16.model.layer4):
        assert all(p.dtype == torch.bfloat16 for p in stage.parameters())
    assert bf16.model.layer3[1].conv2.bias is not None  # folded
    # Stem (dB input) and head (logits) stay float32.
    assert bf16.model.conv1.weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in bf16.model.head.parameters())
    assert bf16.model.layer2[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = recording_features[:2]
    ref = Scorer(ModelConfig(weights=weights, device="cpu")).score_features(x)
    got = bf16.score_features(x)
    assert got.dtype == np.float64
    assert not np.array_equal(got, ref)  # bf16 really ran
    np.testing.assert_allclose(got, ref, rtol=0, atol=5e-2)


def test_startup_hint_only_where_bf16_is_native() -> None:
    amx = frozenset({"avx2", "avx512f", "amx_bf16", "amx_tile"})
    hint = prec.startup_hint("auto", "cpu", flags=amx)
    assert hint is not None and "natively (amx_bf16)" in hint
    assert "about 3.5x faster" in hint and "1.8x end to end" in hint
    assert "precision: bfloat16" in hint and "measured with AMX" not in hint
    cooper = prec.startup_hint("auto", "cpu", flags=frozenset({"avx512_bf16"}))
    assert cooper is not None and "AVX512-BF16 alone gains less" in cooper
    # AVX-512 without BF16 (emulated, slower), no flags, CUDA, or a precision
    # the operator chose: nothing to suggest.
    assert prec.startup_hint("auto", "cpu", flags=frozenset({"avx512f", "avx2"})) is None
    assert prec.startup_hint("auto", "cpu", flags=frozenset()) is None
    assert prec.startup_hint("auto", "cuda", flags=amx) is None
    assert prec.startup_hint("float32", "cpu", flags=amx) is None


@pytest.mark.parametrize("flags", [frozenset({"fpu", "amx_bf16"}), frozenset({"fpu", "avx2"})])
def test_a_station_logs_the_hint_once_and_only_on_native_bf16(
        flags: frozenset[str], weights: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(prec, "cpu_flags", lambda path=prec.CPUINFO: flags)
    monkeypatch.setattr(prec, "_hint_logged", [])  # a fresh process
    with caplog.at_level(logging.INFO, logger="listener.model.precision"):
        for _ in range(3):  # three stations of a fleet
            Scorer(ModelConfig(weights=weights, device="cpu"))
    hints = [r for r in caplog.records if "bfloat16 natively" in r.getMessage()]
    assert len(hints) == (1 if "amx_bf16" in flags else 0)


def shared_files() -> list[Path]:
    """The shared real recordings, labelled clips and HLS segments (CI has them too)."""
    files = sorted((SHARED / "recordings").glob("*.wav"))
    files += sorted((SHARED / "clips").rglob("*.mp3"))
    files += sorted((SHARED / "hls").rglob("*.ts"))
    return files


@pytest.mark.slow
def test_bfloat16_flips_no_decision_on_the_shared_recordings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 (every stage) is judged by decisions: none flips; scores within 1e-2.

    The shipped demo weights (whatever they are), ``listener detect``'s own
    path, every shared recording, clip and HLS segment. bf16 runs natively
    where the CPU has it, emulated elsewhere (oneDNN: the same bf16
    roundings, float32 accumulation; tens of seconds instead of a few).
    Measured (AMD EPYC, emulated) in docs/model.md, "Measured error".
    """
    files = shared_files()
    assert len(files) >= 20, f"shared data missing under {SHARED}"
    if not NATIVE_BF16:
        monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda flags=None: True)
    cfg = Config(station=StationConfig(id="t"),
                 model=ModelConfig(weights=DEMO_WEIGHTS, device="cpu"))
    results = {}
    for name in ("float32", "bfloat16"):
        scorer = Scorer(cfg.model.model_copy(update={"precision": name}), cfg.frontend)
        results[name] = [score_file(f, cfg, scorer.score_waves, scorer.frontend,
                                    score_features=scorer.score_features) for f in files]
    assert scorer.info.float32_stages == ()
    ref, got = (np.array([w.score for r in results[k] for w in r.windows])
                for k in ("float32", "bfloat16"))
    threshold = cfg.detection.local_threshold
    flipped = np.flatnonzero((ref > threshold) != (got > threshold))
    assert flipped.size == 0, [(ref[i], got[i]) for i in flipped]
    clips = [(c.detected, d.detected) for a, b in zip(results["float32"], results["bfloat16"],
                                                      strict=True)
             for c, d in zip(a.clips, b.clips, strict=True)]
    assert sum(a != b for a, b in clips) == 0, clips
    assert any(a for a, _ in clips) and not all(a for a, _ in clips)  # both decisions occur
    diff = np.abs(got - ref)
    assert np.percentile(diff, 99) <= 1e-2, np.sort(diff)[-5:]
    assert not np.array_equal(got, ref)  # bf16 really ran


def test_float32_stages_are_checked_and_run_as_planned(weights: Path,
                                                       recording_features: torch.Tensor) -> None:
    """Blocks run in their own format; names the network lacks are refused."""
    x = recording_features[:2]
    ref = Scorer(ModelConfig(weights=weights, device="cpu")).score_features(x)
    # A "reduced" plan keeping every stage float32 is float32 throughout: same scores.
    every = plan_execution("bfloat16", "cpu", native_bf16=True,
                           float32_stages=["layer1", "layer2", "layer3", "layer4"])
    kept = Scorer(ModelConfig(weights=weights, device="cpu"), plan=every)
    assert all(p.dtype == torch.float32 for p in kept.model.parameters())
    np.testing.assert_allclose(kept.score_features(x), ref, rtol=0, atol=1e-5)
    one = plan_execution("bfloat16", "cpu", native_bf16=True, float32_stages=["layer2.1"])
    mixed = Scorer(ModelConfig(weights=weights, device="cpu"), plan=one)
    assert mixed.model.layer2[1].conv1.weight.dtype == torch.float32
    assert mixed.model.layer2[0].conv1.weight.dtype == torch.bfloat16
    bad = plan_execution("bfloat16", "cpu", native_bf16=True, float32_stages=["layer5"])
    with pytest.raises(ValueError, match=r"\['layer5'\] are not stages or blocks of a resnet18"):
        Scorer(ModelConfig(weights=weights, device="cpu"), plan=bad)
