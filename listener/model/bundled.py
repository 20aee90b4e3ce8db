"""The bundled demo model, and the model id a checkpoint declares.

Every command that scores (``demo``, ``detect``, ``evaluate``) falls back to
the bundled demo model when no weights are given, through
:func:`with_default_weights`, so they all pick it the same way and say so
with the same line. The id shown for a model (status page, ``/metrics``
build info, detect and evaluation JSON) comes from :func:`with_weights`: the
config's ``model.model_id`` when the config sets one, else the id the
checkpoint declares (its safetensors metadata ``model_id``, or a
``- Model id: `...``` line of its model card), else the config default.
"""

from __future__ import annotations

import re
from pathlib import Path

from listener.config import Config
from listener.config.models import MODEL_ID_PATTERN
from listener.model.metadata import safetensors_metadata

BUNDLED_WEIGHTS = Path(__file__).parents[1] / "data" / "demo_resnet18.safetensors"
BUNDLED_NOTICE = ("weights: bundled demo model (ResNet18 trained on about an hour of open "
                  "labelled calls and hydrophone noise; NOT the OrcaHello production model, "
                  "see {card})")
_CARD_ID = re.compile(r"^- Model id: `([A-Za-z0-9_.:/-]{1,128})`", re.MULTILINE)
_ID = re.compile(MODEL_ID_PATTERN)


def bundled_notice() -> str:
    """The one line every command prints when it falls back to the bundled model."""
    return BUNDLED_NOTICE.format(card=BUNDLED_WEIGHTS.with_suffix(".md"))


def declared_model_id(weights: Path) -> str | None:
    """The id ``weights`` declares (safetensors metadata, else its card), or ``None``.

    Only the safetensors header is read (bounded by the format); a file that
    cannot be read declares nothing here, and the loader reports it properly.
    """
    declared = safetensors_metadata(weights).get("model_id", "")
    if _ID.match(declared):
        return declared
    card = weights.with_suffix(".md")
    if weights.suffix and card.is_file() and card.stat().st_size < 1_000_000:
        found = _CARD_ID.search(card.read_text(encoding="utf-8", errors="replace"))
        if found:
            return found[1]
    return None


def with_weights(cfg: Config, weights: Path | None = None) -> Config:
    """``cfg`` scoring ``weights`` (default: its own), named as the checkpoint declares.

    A ``model_id`` set in the config (or a ``models:`` entry's ``id``) is kept.
    """
    path = weights if weights is not None else cfg.model.weights
    update: dict[str, object] = {}
    if weights is not None:
        update["weights"] = weights
    if path is not None and "model_id" not in cfg.model.model_fields_set:
        declared = declared_model_id(Path(path))
        if declared:
            update["model_id"] = declared
    return _update_model(cfg, update)


def _update_model(cfg: Config, update: dict[str, object]) -> Config:
    """``cfg.model`` updated, and the primary of ``models:`` alike (it mirrors it)."""
    if not update:
        return cfg
    new: dict[str, object] = {"model": cfg.model.model_copy(update=update)}
    if cfg.models is not None:
        entry = {k: v for k, v in update.items() if k != "model_id"}
        new["models"] = tuple(m.model_copy(update=entry) if m.role == "primary" else m
                              for m in cfg.models)
    return cfg.model_copy(update=new)


def uses_bundled(cfg: Config) -> bool:
    """True when ``cfg``'s (primary) ResNet names no weights: the bundled model stands in."""
    if cfg.models is not None and any(m.role == "primary" and m.backend != "orcahello-resnet"
                                      for m in cfg.models):
        return False
    return cfg.model.weights is None and BUNDLED_WEIGHTS.is_file()


def with_default_weights(cfg: Config) -> tuple[Config, str | None]:
    """``cfg`` with the bundled model when it names no weights, and the notice to show.

    Returns ``(cfg, None)`` unchanged when weights are given (or the bundled
    file is missing: the scorer then says ``model.weights is required``).
    """
    if not uses_bundled(cfg):
        return with_weights(cfg), None
    cfg = _update_model(with_weights(cfg, BUNDLED_WEIGHTS), {"architecture": "resnet18"})
    return cfg, bundled_notice()
