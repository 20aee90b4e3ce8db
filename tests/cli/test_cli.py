"""The command line as a user runs it (subprocesses), on real recordings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch
from safetensors.torch import save_file
from support.cli import run_cli, run_cli_process

from listener.cli.output import write_json
from listener.model.network import build_model

DATA = Path(__file__).parents[1] / "data"



@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("w") / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("resnet18").state_dict().items()},
              str(path))
    return path


def test_detect_scores_every_file_and_reports_the_bad_one(tmp_path: Path, weights: Path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 50)
    out = tmp_path / "out.json"
    files = [DATA / "catalog" / "S04-J-3_24576hz.wav", bad,
             DATA / "clips" / "orcasoundlab_1594154121.mp3",
             DATA / "hls" / "rpi_orcasound_lab" / "1594150218" / "live001.ts"]
    res = run_cli("detect", *map(str, files), "--weights", str(weights), "--json", str(out))
    assert res.returncode == 1
    assert "broken.wav" in res.stderr and "Traceback" not in res.stderr
    docs = json.loads(out.read_text())
    assert [d["file"] for d in docs] == list(map(str, files))
    assert "error" in docs[1]
    short, mp3, ts = docs[0], docs[2], docs[3]
    # a file shorter than one window is scored whole, padded like fastai
    assert len(short["windows"]) == 1 and short["sample_rate"] == 24576
    assert [w["start_s"] for w in mp3["windows"]] == [0.0, 1.0]
    assert ts["sample_rate"] == 48000 and len(ts["windows"]) == 9
    assert len(ts["clips"]) == 1 and len(ts["clips"][0]["seconds"]) == 10
    assert ts["model"]["architecture"] == "resnet18"
    assert all(0.0 <= w["score"] <= 1.0 for d in (short, mp3, ts) for w in d["windows"])
    assert "highest score" in res.stdout


def test_detect_scores_a_float_wav_with_nan_as_zero_and_says_so(tmp_path: Path,
                                                                 weights: Path) -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(5 * 20000) * 0.01).astype(np.float32)
    x[30000], x[70000] = np.nan, np.inf
    wav = tmp_path / "float.wav"
    scipy.io.wavfile.write(wav, 20000, x)  # IEEE float WAV: it can carry NaN
    out = tmp_path / "out.json"
    res = run_cli("detect", str(wav), "--weights", str(weights), "--json", str(out))
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text(), parse_constant=_refuse)
    assert len(doc["windows"]) == 4 and all(0.0 <= w["score"] <= 1.0 for w in doc["windows"])
    assert f"{wav}: 2 NaN or infinite samples, scored as 0" in res.stderr + res.stdout


def _refuse(name: str) -> None:
    raise AssertionError(f"not JSON: {name}")


def test_detect_json_writes_a_nonfinite_number_as_null(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    write_json([{"score": float("nan"), "windows": [{"score": np.float64("inf")}]}], str(out))
    assert json.loads(out.read_text(), parse_constant=_refuse) == {
        "score": None, "windows": [{"score": None}]}


def test_detect_with_missing_weights_names_the_file() -> None:
    # (Without --weights it uses the bundled model: tests/cli/test_defaults.py.)
    res = run_cli("detect", str(DATA / "clips" / "orcasoundlab_1594154121.mp3"), "--weights",
               "/nonexistent/model.safetensors")
    assert res.returncode == 1
    assert "/nonexistent/model.safetensors" in res.stderr and "Traceback" not in res.stderr


def test_features_writes_the_exact_model_input(tmp_path: Path) -> None:
    out = tmp_path / "f.npy"
    res = run_cli("features", str(DATA / "recordings" / "onc_naxys_hydrophone_44000hz.wav"),
               "--start", "3", "--out", str(out))
    assert res.returncode == 0, res.stderr
    x = np.load(out)
    assert x.shape == (1, 256, 312) and x.dtype == np.float32
    assert np.all(x[:, :, 157:] == 0.0)
    assert x[:, :, :157].max() - x[:, :, :157].min() <= 100.0 + 1e-4


def test_check_config_accepts_the_example(tmp_path: Path, weights: Path) -> None:
    # As installed: the weights in place, the port free (check-config checks both).
    text = (Path(__file__).parents[2] / "config" / "example.yaml").read_text()
    text = text.replace("/var/lib/listener/models/orcahello-srkw.safetensors", str(weights))
    (tmp_path / "example.yaml").write_text(text.replace("port: 9108", "port: 0"))
    res = run_cli("check-config", str(tmp_path / "example.yaml"))
    assert res.returncode == 0, res.stderr
    assert "OK" in res.stdout


@pytest.mark.parametrize(("entry", "said"), [
    ("target_labels: [whale]", "models.0.target_labels: unknown label(s) ['whale']"),
    ("window_s: 90", "window_s (90.0) is longer than detection.clip_s (60.0)"),
])
def test_check_config_refuses_what_run_refuses(tmp_path: Path, weights: Path, entry: str,
                                               said: str) -> None:
    # The models are planned as `run` plans them, not just the YAML validated.
    path = tmp_path / "s.yaml"
    path.write_text("station: {id: s1}\nmetrics: {enabled: false}\n"
                    f"state: {{dir: {tmp_path / 'state'}}}\nmodels:\n"
                    f"  - {{id: a, weights: {weights}, role: primary, {entry}}}\n")
    res = run_cli("check-config", str(path))
    assert res.returncode == 1, res.stdout
    assert said in res.stderr and "s.yaml" in res.stderr


def test_help_lists_every_command() -> None:
    res = run_cli("--help")
    for cmd in ("run", "demo", "replay", "detect", "features", "check-config", "convert-fastai",
                "ensemble", "evaluate", "train"):
        assert cmd in res.stdout


def test_demo_runs_the_whole_system(tmp_path: Path) -> None:
    import re

    res = run_cli_process("demo", "--duration", "25", "--port", "0")  # 0: a free port, then told
    assert res.returncode == 0, res.stdout + res.stderr
    # It says plainly which weights it uses: the bundled demo model, not production.
    assert "bundled demo model" in res.stdout and "NOT the OrcaHello production" in res.stdout
    where = re.search(r"console: http://127\.0\.0\.1:(\d+)/ ", res.stdout)
    assert where is not None and where[1] != "0", res.stdout
    assert f"http://127.0.0.1:{where[1]}/metrics" in res.stdout
    assert "event detection" in res.stdout  # the demo model hears the L pod calls
    assert "windows scored" in res.stdout


def test_detect_refuses_a_file_too_short_for_a_spectrogram(tmp_path: Path, weights: Path) -> None:
    import soundfile as sf

    tiny = tmp_path / "tiny.wav"
    sf.write(tiny, np.zeros(1000, dtype=np.float32), 48000)  # 21 ms
    res = run_cli("detect", str(tiny), "--weights", str(weights))
    assert res.returncode == 1
    assert "tiny.wav" in res.stderr and "too short" in res.stderr


def test_detect_precision_flag(tmp_path: Path, weights: Path) -> None:
    from listener.model.precision import cpu_has_native_bf16

    clip = str(DATA / "clips" / "orcasoundlab_1594154121.mp3")
    out = tmp_path / "out.json"
    res = run_cli("detect", clip, "--weights", str(weights), "--precision", "float32",
               "--json", str(out))
    assert res.returncode == 0, res.stderr
    model = json.loads(out.read_text())["model"]
    assert model["precision"] == model["dtype"] == "float32"
    res = run_cli("detect", clip, "--weights", str(weights), "--precision", "bfloat16",
               "--json", str(out))
    if cpu_has_native_bf16():
        assert res.returncode == 0 and json.loads(out.read_text())["model"]["precision"] == \
            "bfloat16"
    else:  # refused up front with the reason, not run many times slower
        assert res.returncode == 1 and "no native bfloat16" in res.stderr
        assert "Traceback" not in res.stderr
    assert "--precision" in run_cli("replay", "--help").stdout
