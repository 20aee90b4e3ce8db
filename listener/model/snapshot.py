"""Hugging Face snapshot folders: ``config.json`` beside ``model.safetensors``.

The hub port of the OrcaHello ResNet and every ``transformers`` model are
distributed this way. Only JSON is read here (never pickles, never code from
the folder); what a ``config.json`` may say about the ResNet is read
leniently, because the port's exact keys are not pinned by any spec:

* the architecture from ``architecture``/``arch``/``backbone``/``model_name``/
  ``model_type`` or the ``architectures`` list (any value naming resnet18 or
  resnet50);
* the thresholds from ``local_threshold`` (or ``threshold``, the name
  OrcaHello's orchestrator uses) and ``global_threshold`` (or
  ``min_num_positive_calls_threshold``), at the top level or under
  ``inference``/``detection``;
* the label names from ``id2label`` (keys are class indices).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from listener.errors import ModelLoadError

CONFIG_NAME = "config.json"
WEIGHTS_NAMES = ("model.safetensors", "pytorch_model.safetensors")
_MAX_CONFIG_BYTES = 4 * 1024 * 1024
_ARCH_KEYS = ("architecture", "arch", "backbone", "model_name", "model_type")
_LOCAL_KEYS = ("local_threshold", "threshold")
_GLOBAL_KEYS = ("global_threshold", "min_num_positive_calls_threshold")


@dataclass(frozen=True)
class Snapshot:
    """What a snapshot folder's ``config.json`` says (``None``: not stated)."""

    folder: Path
    config: dict[str, Any] = field(repr=False)
    architecture: str | None = None
    local_threshold: float | None = None
    global_threshold: int | None = None
    labels: tuple[str, ...] | None = None

    def weights_file(self) -> Path:
        """The folder's safetensors file; ``ModelLoadError`` when there is none."""
        for name in WEIGHTS_NAMES:
            if (self.folder / name).is_file():
                return self.folder / name
        raise ModelLoadError(f"{self.folder}: snapshot folder has no "
                             f"{' or '.join(WEIGHTS_NAMES)}")


def read_config_json(folder: str | Path) -> dict[str, Any]:
    """A model folder's ``config.json`` as a dict; ``ModelLoadError`` naming the folder."""
    p = Path(folder)
    if not p.is_dir():
        raise ModelLoadError(f"{p}: not a folder (expected a snapshot folder with "
                             f"{CONFIG_NAME})")
    cfg_path = p / CONFIG_NAME
    if not cfg_path.is_file():
        raise ModelLoadError(f"{p}: folder without {CONFIG_NAME} (a save_pretrained / hub "
                             f"snapshot folder has one)")
    if cfg_path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{cfg_path}: larger than {_MAX_CONFIG_BYTES} bytes; "
                             f"not a model config")
    try:
        doc = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{cfg_path}: not readable JSON: {err}") from err
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{cfg_path}: expected a JSON object, found "
                             f"{type(doc).__name__}")
    return doc


def labels_of(config: dict[str, Any], source: str) -> tuple[str, ...] | None:
    """``id2label`` as a tuple in class order, or ``None`` when absent."""
    raw = config.get("id2label")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise ModelLoadError(f"{source}: id2label must be a non-empty object")
    try:
        items = sorted((int(k), str(v)) for k, v in raw.items())
    except ValueError as err:
        raise ModelLoadError(f"{source}: id2label keys must be class indices: {err}") from err
    if [i for i, _ in items] != list(range(len(items))):
        raise ModelLoadError(f"{source}: id2label must number classes 0..{len(items) - 1}")
    return tuple(label for _, label in items)


def _sections(config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    subs = [(k, config.get(k)) for k in ("inference", "detection")]
    return [("", config), *((f"{k}.", s) for k, s in subs if isinstance(s, dict))]


def _first(config: dict[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    """The first of ``keys`` set, as (its dotted key, its value); ("", None) if none."""
    for prefix, section in _sections(config):
        for key in keys:
            if section.get(key) is not None:
                return prefix + key, section[key]
    return "", None


def _local_threshold(config: dict[str, Any], src: str) -> float | None:
    """A real number as written: ``true`` is not 1.0."""
    key, value = _first(config, _LOCAL_KEYS)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelLoadError(f"{src}: {key} must be a number from 0 to 1, "
                             f"got {json.dumps(value)}")
    return float(value)


def _global_threshold(config: dict[str, Any], src: str) -> int | None:
    """A whole number of windows as written: 2.9 is not 2 (2.0 is)."""
    key, value = _first(config, _GLOBAL_KEYS)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelLoadError(f"{src}: {key} must be a whole number of windows, "
                             f"got {json.dumps(value)}")
    return value


def _architecture(config: dict[str, Any]) -> str | None:
    values: list[Any] = [config.get(k) for k in _ARCH_KEYS]
    archs = config.get("architectures")
    if isinstance(archs, list):
        values.extend(archs)
    for v in values:
        text = str(v).lower() if v is not None else ""
        for arch in ("resnet18", "resnet50"):
            if arch in text:
                return arch
    return None


def read_snapshot(folder: str | Path) -> Snapshot:
    """Read a ResNet snapshot folder's ``config.json`` (see the module docstring)."""
    p = Path(folder)
    config = read_config_json(p)
    src = str(p / CONFIG_NAME)
    local_t, global_t = _local_threshold(config, src), _global_threshold(config, src)
    if local_t is not None and not 0.0 <= local_t <= 1.0:
        raise ModelLoadError(f"{src}: local threshold {local_t} is outside 0..1")
    if global_t is not None and global_t < 1:
        raise ModelLoadError(f"{src}: global threshold {global_t} must be at least 1")
    return Snapshot(p, config, _architecture(config), local_t, global_t, labels_of(config, src))


def resolve_weights(p: Path, architecture: str) -> tuple[Path, str]:
    """A weights path as given, or a hub snapshot folder's weights file and the
    architecture its ``config.json`` names (when ``architecture`` is ``auto``).

    Raises:
        ModelLoadError: a folder that is not a snapshot, or an unreadable one.
    """
    if not p.is_dir():
        return p, architecture
    if not (p / CONFIG_NAME).is_file():
        raise ModelLoadError(f"{p}: not a regular file, and a folder without "
                             f"{CONFIG_NAME} (a hub snapshot folder has config.json "
                             f"and model.safetensors)")
    snap = read_snapshot(p)
    if architecture == "auto" and snap.architecture is not None:
        architecture = snap.architecture
    return snap.weights_file(), architecture
