"""config/stations/*.yaml and config/example.yaml.

The station files must load, name the Orcasound node exactly as OrcaHello's
reference list does (id, name, longitude, latitude: hard-coded below, from
the OrcaHello model notes), and use the systemd layout under
/var/lib/listener. The example must load, mention every key of every section,
and show each key's real default, so it cannot drift from listener/config/.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from listener.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
STATIONS_DIR = ROOT / "config" / "stations"
EXAMPLE = ROOT / "config" / "example.yaml"

# id, name, longitude, latitude: the hydrophone nodes OrcaHello knows.
NODES = {
    "rpi_andrews_bay": ("Andrews Bay", -123.1666492, 48.5500299),
    "rpi_bush_point": ("Bush Point", -122.6040035, 48.0336664),
    "rpi_mast_center": ("Mast Center", -122.32512, 47.34922),
    "rpi_north_sjc": ("North San Juan Channel", -123.058779, 48.591294),
    "rpi_orcasound_lab": ("Orcasound Lab", -123.1735774, 48.5583362),
    "rpi_point_robinson": ("Point Robinson", -122.37267, 47.388383),
    "rpi_port_townsend": ("Port Townsend", -122.760614, 48.135743),
    "rpi_sunset_bay": ("Sunset Bay", -122.33393605795372, 47.86497296593844),
}
BUCKET = "https://s3-us-west-2.amazonaws.com/audio-orcasound-net"
WEIGHTS = Path("/var/lib/listener/models/orcahello-srkw.safetensors")


def test_one_file_per_node() -> None:
    assert sorted(p.name for p in STATIONS_DIR.iterdir()) == sorted(f"{n}.yaml" for n in NODES)


@pytest.mark.parametrize("node", sorted(NODES))
def test_station_file(node: str) -> None:
    path = STATIONS_DIR / f"{node}.yaml"
    cfg = load_config(path)
    name, longitude, latitude = NODES[node]
    assert (cfg.station.id, cfg.station.name) == (node, name)
    assert cfg.station.longitude == longitude and cfg.station.latitude == latitude

    assert cfg.stream is not None
    assert (cfg.stream.kind, cfg.stream.node, cfg.stream.base_url) == ("orcasound", node, BUCKET)
    assert cfg.model.weights == WEIGHTS

    home = Path("/var/lib/listener") / node
    assert cfg.state.dir == home / "state"
    outputs = cfg.outputs
    assert outputs.jsonl is not None and outputs.jsonl.path.parent == home
    assert outputs.orcahello is not None and outputs.orcahello.dir.parent == home
    assert outputs.clips is not None and outputs.clips.dir.parent == home
    # No secrets in YAML: a webhook, if ever enabled, names where its token is.
    if outputs.webhook is not None:
        assert outputs.webhook.token_env or outputs.webhook.token_file

    assert cfg.metrics.enabled and cfg.metrics.host == "0.0.0.0" and cfg.metrics.port == 9108


@pytest.mark.parametrize("node", sorted(NODES))
def test_station_file_says_why(node: str) -> None:
    text = (STATIONS_DIR / f"{node}.yaml").read_text(encoding="utf-8")
    comments = [ln for ln in text.splitlines() if ln.lstrip().startswith("#")]
    assert len(comments) >= 10
    assert f"listener@{node}" in text  # how it is run


# --- config/example.yaml ------------------------------------------------------------

def test_example_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.stream is not None and cfg.stream.kind == "orcasound"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The section model behind a field's type (``X`` or ``X | None``)."""
    candidates = [annotation]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        candidates = list(typing.get_args(annotation))
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, default or PydanticUndefined, section model or None) for every key."""
    out = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _model_of(info.annotation)
        out.append((key, info.default, section))
        if section is not None:
            out.extend(_fields(section, key + "."))
    return out


ALL_KEYS = _fields(Config)


def _commented_or_not(text: str, key: str) -> bool:
    """``key:`` at its nesting depth, in a line or in a commented-out line
    (``  # webhook:`` is ``webhook:`` one level deep once its ``# `` goes)."""
    uncommented = re.sub(r"^(\s*)# ", r"\1", text, flags=re.MULTILINE)
    depth = key.count(".")
    leaf = key.rsplit(".", 1)[-1]
    pattern = rf"^ {{{2 * depth}}}{re.escape(leaf)}:"
    return re.search(pattern, uncommented, re.MULTILINE) is not None


@pytest.mark.parametrize("key", [k for k, _, _ in ALL_KEYS])
def test_example_mentions_every_key(key: str) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    assert _commented_or_not(text, key), f"config/example.yaml does not show {key}"


# Keys whose example value is deliberately not the default: identity, the
# stream to follow, the weights, and the (default-off) sinks turned on.
NOT_DEFAULTS = {"station", "stream", "stream.node", "model.weights", "outputs.jsonl",
                "outputs.orcahello", "outputs.clips"}


def _lookup(data: Any, key: str) -> tuple[bool, Any]:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return False, None
        data = data[part]
    return True, data


def _normalise(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


@pytest.mark.parametrize("key,default", [(k, d) for k, d, _ in ALL_KEYS])
def test_example_values_are_the_defaults(key: str, default: Any) -> None:
    if key in NOT_DEFAULTS or any(key.startswith(p + ".") for p in NOT_DEFAULTS
                                  if p not in ("stream",)):
        return
    found, value = _lookup(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")), key)
    if not found or default is PydanticUndefined:
        return  # commented out (optional sink) or required without a default
    if isinstance(value, dict):
        return  # a section: its keys are checked one by one
    assert value == _normalise(default), f"{key}: example {value!r}, default {default!r}"


# Written even at their defaults, these override what the weights bring with
# them (the checkpoint's id, a snapshot's config.json thresholds).
OVERRIDING_KEYS = {"model": {"model_id"}, "detection": {"local_threshold", "global_threshold"}}


def test_example_leaves_out_the_keys_that_override_the_weights() -> None:
    cfg = load_config(EXAMPLE)
    for section, keys in OVERRIDING_KEYS.items():
        written = getattr(cfg, section).model_fields_set & keys
        assert not written, f"config/example.yaml sets {section}.{sorted(written)}"
