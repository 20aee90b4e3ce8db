"""``check-config`` and ``run`` refuse the same bad configs with one message (file:line: key)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from listener.cli.main import main
from listener.config import load_config, parse_config
from listener.errors import ConfigError
from listener.model.inspect import inspect_checkpoint

DEMO = Path(__file__).parents[2] / "listener" / "data" / "demo_resnet18.safetensors"
STREAM = "stream: {kind: orcasound, node: rpi_x, base_url: 'http://127.0.0.1:9'}\n"
GOOD = f"station: {{id: x}}\n{STREAM}model: {{weights: {DEMO}}}\nmetrics: {{enabled: false}}\n"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def _bad_configs(tmp: Path, port: int) -> dict[str, tuple[str, str]]:
    """name -> (config text, what the message must contain)."""
    (tmp / "empty.safetensors").write_bytes(b"")
    (tmp / "text.pt").write_text("these are not weights\n")
    (tmp / "a-file").write_text("x")
    (tmp / "events-folder").mkdir()
    base = f"station: {{id: x}}\n{STREAM}"
    with_weights = f"{base}model: {{weights: {DEMO}}}\n"
    quiet = "metrics: {enabled: false}\n"
    return {
        "only station": ("station: {id: x}\n", ": stream: the config has no 'stream'"),
        "no weights": (base + quiet, ": model.weights: required"),
        "weights missing": (base + "model: {weights: nowhere.safetensors}\n" + quiet,
                            ":3: model.weights: "),
        "weights /dev/zero": (base + "model: {weights: /dev/zero}\n" + quiet,
                              ":3: model.weights: /dev/zero: not a regular file"),
        "weights empty": (base + "model: {weights: empty.safetensors}\n" + quiet,
                          ":3: model.weights: "),
        "weights text": (base + "model: {weights: text.pt}\n" + quiet,
                         ":3: model.weights: "),
        "weights of resnet18 named resnet50": (
            base + f"model: {{weights: {DEMO}, architecture: resnet50}}\n" + quiet,
            "model.weights: "),
        "state under a file": (with_weights + quiet + "state: {dir: a-file/state}\n",
                               ":5: state.dir: cannot create"),
        "state not writable": (with_weights + quiet + "state: {dir: /proc/listener-x}\n",
                               ":5: state.dir: cannot write"),
        "jsonl path a folder": (with_weights + quiet + "outputs: {jsonl: {path: events-folder}}\n",
                                ":5: outputs.jsonl.path: "),
        "clips dir a file": (with_weights + quiet + "outputs: {clips: {dir: a-file}}\n",
                             ":5: outputs.clips.dir: "),
        "port in use": (with_weights + f"metrics: {{host: 127.0.0.1, port: {port}}}\n",
                        ":4: metrics.host/metrics.port: cannot serve metrics"),
        "model_id with a space": (base + "model: {model_id: 'a b'}\n", ":3: model.model_id: "),
        "station id ..": ("station: {id: '..'}\n" + STREAM, ":1: station.id: must not start"),
        "unreachable global_threshold": (with_weights + "detection: {global_threshold: 61}\n",
                                         ":4: detection.global_threshold: 61 can never"),
        "a typo": ("station: {id: x}\nstream: {kind: orcasound, node: a, "
                   "pol_interval_s: 3}\n", "did you mean 'poll_interval_s'?"),
    }


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().err.strip()


def test_check_config_refuses_what_run_refuses_with_the_same_message(
        tmp_path: Path, taken_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    for name, (text, expected) in _bad_configs(tmp_path, taken_port).items():
        path = tmp_path / f"{name.replace(' ', '_').replace('/', '_')}.yaml"
        path.write_text(text)
        check = _cli(capsys, "check-config", str(path))
        run = _cli(capsys, "run", "--config", str(path))
        assert check[0] == 1 and run[0] == 1, (name, check, run)
        assert check[1] == run[1], name
        assert check[1].startswith(f"error: {path}:"), (name, check[1])
        assert expected in check[1], (name, check[1])
        assert "station x: station x" not in check[1] and "Traceback" not in check[1]
        assert len(check[1].splitlines()) == 1, (name, check[1])


def test_a_good_config_passes_and_check_config_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(GOOD + "state: {dir: var/state}\noutputs: {jsonl: {path: out/e.jsonl}}\n")
    code, err = _cli(capsys, "check-config", str(path))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.yaml"]


@pytest.mark.parametrize("model_id", ["a<b", "a b", "x" * 10_000, ""])
def test_a_bad_model_id_is_one_line_naming_the_key(model_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"station: {{id: x}}\nmodel:\n  model_id: '{model_id}'\n", "m.yaml")
    text = str(info.value)
    assert text.startswith("m.yaml:3: model.model_id: ") and len(text) < 300, text


@pytest.mark.parametrize("station_id", [".", "..", ".hidden"])
def test_a_station_id_that_would_make_hidden_files_is_refused(station_id: str) -> None:
    with pytest.raises(ConfigError, match=r"^s\.yaml:1: station\.id: must not start"):
        parse_config(f"station: {{id: '{station_id}'}}\n", "s.yaml")


def test_global_threshold_is_checked_against_the_clip() -> None:
    ok = parse_config("station: {id: x}\ndetection: {global_threshold: 60}\n", "g.yaml")
    assert ok.detection.global_threshold == 60
    with pytest.raises(ConfigError, match=r"g\.yaml:2: detection\.global_threshold: 16 "):
        parse_config("station: {id: x}\ndetection: {clip_s: 15, global_threshold: 16}\n",
                     "g.yaml")


@pytest.mark.parametrize(("typo", "suggestion"), [
    ("stream: {kind: orcasound, node: a, pol_interval_s: 3}", "stream.pol_interval_s: "
     "unknown key; did you mean 'poll_interval_s'?"),
    ("modle: {}", "modle: unknown key; did you mean 'model'?"),
    ("models: [{id: a, wieghts: w}]", "models.0.wieghts: unknown key; did you mean 'weights'?"),
    ("outputs: {jsonl: {path: x, rotate: 1}}", "outputs.jsonl.rotate: unknown key (not"),
])
def test_unknown_keys_get_the_closest_known_name(typo: str, suggestion: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"station: {{id: x}}\n{typo}\n", "t.yaml")
    assert f"t.yaml:2: {suggestion}" in str(info.value)


def test_configs_remember_their_file_without_changing_their_value(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("station: {id: x}\n")
    cfg = load_config(path)
    assert cfg == parse_config("station: {id: x}\n", base_dir=tmp_path)
    copied = cfg.model_copy(update={"detection": cfg.detection})
    from listener.config.origin import origin_of

    assert origin_of(copied).path == str(path)


def test_inspect_checkpoint_reads_the_layout_of_both_file_kinds(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    summary = inspect_checkpoint(DEMO)
    assert (summary.layout, summary.architecture) == ("listener", "resnet18")
    pt = tmp_path / "w.pt"
    torch.save({f"model.{k}": v for k, v in load_file(str(DEMO)).items()}, pt)
    assert (inspect_checkpoint(pt).layout, inspect_checkpoint(pt).architecture) == \
        ("hub", "resnet18")
