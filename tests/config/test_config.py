"""Config faults (issue 14): each refused with a ConfigError naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.config import load_config
from listener.errors import ConfigError

BASE = """station:
  id: test
stream:
  kind: orcasound
  node: rpi_test
"""


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "station.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize("text, key, words", [
    (BASE + "  fetch:\n    read_timeout_s: .inf\n", "stream.fetch.read_timeout_s", "finite"),
    (BASE + "  poll_interval_s: 1e308\n", "stream.poll_interval_s", "less than or equal"),
    # Below a segment's cadence, late uploads would cut healthy clips in two.
    (BASE + "  stalled_clip_after_s: 5\n", "stream.stalled_clip_after_s", "greater than or equal"),
    (BASE + "frontend:\n  n_fft: 100000000\n", "frontend.n_fft", "less than or equal"),
    (BASE + "frontend:\n  n_fft: 1e8\n", "frontend.n_fft", "valid integer"),
    (BASE + "detection:\n  hop_s: 1e-9\n", "detection.hop_s", "greater than or equal"),
    (BASE + "detection:\n  window_s: .nan\n", "detection.window_s", "finite"),
    (BASE + "  node: rpi_other\n", "stream", "duplicate key 'node'"),
    (BASE + "state:\n  dir: ${LISTENER_SURELY_UNDEFINED}/state\n", "state.dir",
     "LISTENER_SURELY_UNDEFINED} is not set"),
    ("station: &a\n  id: x\n  name: *a\n", "station", "recursive YAML alias"),
    (BASE + "outputs:\n  on: 3\n", ":6: outputs: a key must be a name, got True",
     "YAML reads on, off, yes, no, true and false as booleans: quote the key"),
    (BASE + "outputs:\n  1: 3\n", ":6: outputs: a key must be a name, got 1", "quote the key"),
])
def test_bad_values_are_config_errors_naming_file_and_key(
        tmp_path: Path, text: str, key: str, words: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and key in message and words in message, message


def test_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = _write(tmp_path, BASE + "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="YAML nodes"):
        load_config(path)


def test_non_utf8_file_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match=r"station.yaml:6: not UTF-8") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_defined_variables_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    monkeypatch.setenv("LISTENER_TEST_STATE", str(tmp_path / "st"))
    cfg = load_config(_write(tmp_path, BASE + "state:\n  dir: ${LISTENER_TEST_STATE}/x\n"))
    assert cfg.state.dir == tmp_path / "st" / "x"


@pytest.mark.parametrize("text", [
    "station: {id: s}\nmodel: {model_id: q, weights: /m/q.safetensors}\n",
    "station: {id: s}\nmodels:\n  - {id: a, weights: /m/a.safetensors}\n"
    "  - {id: b, backend: transformers, weights: /m/b, role: shadow}\n",
])
def test_a_dumped_config_loads_back_equal(tmp_path: Path, text: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml
    # Defaults such as state.dir are relative to the working folder, paths in a
    # file to the file's folder: the same folder here, so they mean the same.
    monkeypatch.chdir(tmp_path)
    first = tmp_path / "first.yaml"
    first.write_text(text, encoding="utf-8")
    cfg = load_config(first)
    again = tmp_path / "again.yaml"
    again.write_text(yaml.safe_dump(cfg.model_dump(mode="json")), encoding="utf-8")
    loaded = load_config(again).model_dump()  # (its recorded origin differs)
    expected = cfg.model_dump()
    expected["state"]["dir"] = cfg.state.dir.resolve()
    assert loaded == expected


def test_a_left_out_state_dir_is_relative_to_the_file_as_a_written_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # config/example.yaml: deleting a line set to its default changes nothing.
    folder = tmp_path / "etc"
    folder.mkdir()
    monkeypatch.chdir(tmp_path)
    left_out = load_config(_write(folder, BASE))
    written = load_config(_write(folder, BASE + "state:\n  dir: var/state\n"))
    assert left_out.state.dir == written.state.dir == folder / "var" / "state"
