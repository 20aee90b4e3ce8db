"""A training run's checkpoint: what continues it bit for bit, and the recipe it belongs to.

Running the same command again resumes an interrupted run. A checkpoint left
by another command (other data settings, seeds, learning rate, epochs) would
continue someone else's trajectory under this command's name and card, so it
is refused, naming the keys that differ. Keys that only decide when a run
stops (patience, time budget, the fine-tune check's draws) may change. The
data is part of the binding too (:func:`data_binding`): the same command on
other recordings, other ``--background`` or ``--reviews`` audio or another
frontend would otherwise resume the old run and write its weights under the
new data's name.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from listener.atomic import atomic_write
from listener.config import FrontendConfig
from listener.errors import ListenerError
from listener.training.data import Recording

#: Recipe keys a resumed run may change: they decide when it stops, not what a step does.
STOPPING_KEYS = frozenset({"patience", "time_budget_s", "confirm_draws"})
#: The key of :func:`data_binding` in a binding (known only once the audio is gathered).
DATA_KEY = "data"


def data_binding(train_set: list[Recording], val_set: list[Recording],
                 frontend: FrontendConfig) -> dict[str, Any]:
    """The data half of a run's binding: a digest of every recording's audio, class, source
    and side of the split, and the frontend settings (both decide what a step sees)."""
    rows = sorted((hashlib.sha1(np.ascontiguousarray(r.wave).tobytes()).hexdigest(),
                   r.positive, r.source, held)
                  for held, side in ((False, train_set), (True, val_set)) for r in side)
    key = hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:16]
    return {"recordings": f"{len(train_set)} training and {len(val_set)} held-out "
                          f"recordings, digest {key}",
            "frontend": frontend.model_dump(mode="json")}


@dataclass
class State:
    """Where a run stands: its best weights so far, its history and its generators."""

    best: dict[str, Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]]
    seconds: float
    rng: np.random.Generator  # examples
    gen: torch.Generator  # masks

    @classmethod
    def fresh(cls, best: dict[str, Tensor], seed: int) -> State:
        return cls(best, 0, -math.inf, [], 0.0, np.random.default_rng([seed, 1]),
                   torch.Generator().manual_seed(seed))


def save(path: Path, parts: dict[str, Any], state: State, recipe: dict[str, Any]) -> None:
    """Write ``state``, the ``state_dict()`` of each of ``parts`` (model, optimiser ...;
    ``None`` for an absent one) and the global torch generators' states, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {name: part.state_dict() if part is not None else {} for name, part in parts.items()}
    doc.update({"best": state.best, "best_epoch": state.best_epoch,
                "best_score": state.best_score, "history": json.dumps(state.history),
                "seconds": state.seconds, "rng": json.dumps(state.rng.bit_generator.state),
                "gen": state.gen.get_state(), "torch_rng": torch.get_rng_state(),
                # Dropout on a GPU draws from the CUDA generators, not the CPU one.
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "recipe": json.dumps(_binding(recipe), sort_keys=True)})
    atomic_write(path, lambda tmp: torch.save(doc, tmp))


def check(path: Path, recipe: dict[str, Any]) -> None:
    """Refuse the checkpoint at ``path``, if there is one, when another recipe wrote it
    (cheap: the tensors are mapped, not read; for before any audio is decoded, so the
    data, which :func:`resume` checks, is left out)."""
    if path.exists():
        _same_recipe(path, _read(path, mmap=True), _binding(recipe),
                     skip=f"{DATA_KEY}.")


def resume(path: Path, parts: dict[str, Any], recipe: dict[str, Any]) -> State:
    """Load a checkpoint written by :func:`save` into ``parts`` and the global generators,
    refusing one of another recipe before anything is loaded."""
    doc = _read(path)
    _same_recipe(path, doc, _binding(recipe))
    for name, part in parts.items():
        if part is not None:
            part.load_state_dict(doc[name])
    rng = np.random.default_rng()
    rng.bit_generator.state = json.loads(doc["rng"])
    gen = torch.Generator()
    gen.set_state(doc["gen"])
    torch.set_rng_state(doc["torch_rng"])
    if doc.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(doc["cuda_rng"])
    return State(doc["best"], int(doc["best_epoch"]), float(doc["best_score"]),
                 json.loads(doc["history"]), float(doc["seconds"]), rng, gen)


#: How every refusal of a checkpoint ends.
START_OVER = "remove the checkpoint (or name another with --checkpoint) to start over"


def _read(path: Path, mmap: bool = False) -> dict[str, Any]:
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        raise ListenerError(f"{path}: not a readable training checkpoint ({err}); "
                            f"{START_OVER}") from err
    if not isinstance(doc, dict) or "history" not in doc:
        raise ListenerError(f"{path}: not a training checkpoint of listener train; "
                            f"{START_OVER}")
    return doc


def _binding(recipe: dict[str, Any]) -> dict[str, Any]:
    """The keys that must match, nested ones flattened (``augment.snr_db``), through JSON
    so that tuples and lists compare equal."""
    flat: dict[str, Any] = {}
    for key, value in json.loads(json.dumps(recipe)).items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        elif key not in STOPPING_KEYS:
            flat[key] = value
    return flat


def _same_recipe(path: Path, doc: dict[str, Any], now: dict[str, Any],
                 skip: str | None = None) -> None:
    if "recipe" not in doc:  # checkpoints before this check carry none
        return
    try:
        saved = json.loads(doc["recipe"])
    except (TypeError, ValueError):
        saved = None
    if not isinstance(saved, dict):
        raise ListenerError(f"{path}: its recipe does not read; {START_OVER}")
    differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k)
                    and not (skip and k.startswith(skip)))
    if differ:
        shown = "; ".join(f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in differ)
        raise ListenerError(f"{path}: this checkpoint belongs to another training command "
                            f"({shown}); run the command that started it, or {START_OVER}")
