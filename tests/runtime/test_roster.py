"""Config files and folders -> stations; shards; quorum; per-station readiness."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.cli.main import main
from listener.errors import ListenerError
from listener.runtime.readiness import StationHealth, fleet_readiness, parse_quorum
from listener.runtime.roster import Shard, load_roster

GOOD = "station: {{id: {id}}}\nstream: {{kind: orcasound, node: {id}}}\n"


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_a_folder_gives_its_yaml_files_by_name(tmp_path: Path) -> None:
    for sid in ("rpi_c", "rpi_a", "rpi_b"):
        _write(tmp_path, f"{sid}.yaml", GOOD.format(id=sid))
    _write(tmp_path, "README.md", "not a config")
    roster = load_roster([tmp_path])
    assert [e.cfg.station.id for e in roster.stations] == ["rpi_a", "rpi_b", "rpi_c"]


def test_a_bad_file_is_named_and_fatal_unless_keep_going(tmp_path: Path) -> None:
    good = _write(tmp_path, "a.yaml", GOOD.format(id="rpi_a"))
    bad = _write(tmp_path, "b.yaml", "station: {id: rpi_b}\nmodel: {device: tpu}\n")
    with pytest.raises(ListenerError, match=rf"{bad}:2: model.device"):
        load_roster([good, bad])
    roster = load_roster([good, bad], keep_going=True)
    assert [e.path for e in roster.stations] == [good]
    assert roster.skipped[0][0] == bad


def test_two_files_with_one_station_id_are_refused(tmp_path: Path) -> None:
    first = _write(tmp_path, "a.yaml", GOOD.format(id="rpi_a"))
    second = _write(tmp_path, "b.yaml", GOOD.format(id="rpi_a"))
    with pytest.raises(ListenerError, match=rf"{second}.*also the id in {first}"):
        load_roster([tmp_path])


def test_shards_split_stations_into_disjoint_parts_that_cover_them_all() -> None:
    ids = [f"station_{i}" for i in range(200)]
    for count in (1, 2, 3, 7):
        parts = [{s for s in ids if Shard(i, count).owns(s)} for i in range(count)]
        assert sum(len(p) for p in parts) == len(ids)
        assert set().union(*parts) == set(ids)
        assert all(len(p) > len(ids) / count / 2 for p in parts)  # roughly even


@pytest.mark.parametrize("text", ["3", "1/0", "2/2", "a/b", "-1/2"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ListenerError, match="--shard"):
        Shard.parse(text)


def test_quorum_and_readiness() -> None:
    assert parse_quorum("50%", 5) == 3 and parse_quorum("2", 5) == 2
    with pytest.raises(ListenerError, match="--quorum"):
        parse_quorum("6", 5)
    stations = [StationHealth("a", "running", True, "ok"),
                StationHealth("b", "running", False, "no new segment for 300 s"),
                StationHealth("c", "failed", False, "cannot build")]
    ready, body = fleet_readiness(stations, 1)
    assert ready and body["current"] == 1 and body["stations"]["c"]["state"] == "failed"
    assert not fleet_readiness(stations, 2)[0]
    assert not fleet_readiness(stations, 1, "stopping")[0]


def test_cli_run_names_the_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "a.yaml", GOOD.format(id="rpi_a"))
    bad = _write(tmp_path, "b.yaml", "station: {id: rpi_b}\nbogus: 1\n")
    assert main(["run", "--config", str(good), "--config", str(bad)]) == 1
    assert str(bad) in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing")]) == 1
    assert "no such config file or folder" in capsys.readouterr().err


def test_device_and_precision_reach_every_model_not_only_the_primary(tmp_path: Path) -> None:
    from listener.config import with_precision
    from listener.model.backends.check import plan_models
    from listener.model.bundled import BUNDLED_WEIGHTS

    # `run --device` and `--precision` override every station's every model.
    entry = f"weights: {BUNDLED_WEIGHTS}, architecture: resnet18, device: cpu, precision: auto"
    path = _write(tmp_path, "s.yaml", GOOD.format(id="s1") + "models:\n"
                  f"  - {{id: a, role: primary, {entry}}}\n"
                  f"  - {{id: b, role: shadow, {entry}}}\n")
    plan = load_roster([path], device="cuda").stations[0].plan
    assert [p.entry.device for p in plan.models] == ["cuda", "cuda"]
    assert plan.cfg.model.device == "cuda"
    assert {m.device for m in plan.cfg.model_entries()} == {"cuda"}
    cfg = with_precision(plan.cfg, "float16")
    assert [p.entry.precision for p in plan_models(cfg)] == ["float16", "float16"]
