"""The window levels a model trained at, read from the recipe its weights record.

The daemon's spectrogram is dB re 1.0 with no normalisation (the production
frontend), so a stream far quieter or louder than every window a model
trained at is audio the model never heard: its scores there are untested.
``listener train`` draws each training window's level from ``gain_db`` (dB re
:data:`REFERENCE_RMS`) and writes its recipe, ``gain_db`` included, into the
safetensors metadata; the daemon reads it back here and compares it with
``listener_audio_level_dbfs`` (:class:`listener.audio.level.LevelWatch`).
A band-normalised network (``--band-norm``) takes each band's median away
first, so a gain cancels in its input: it has no level range to leave.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from listener.model.metadata import safetensors_header
from listener.model.network import BAND_NORM_KEY

log = logging.getLogger(__name__)

#: The window RMS the recipe's ``gain_db`` is relative to (0 dB re 0.05 = -26 dBFS).
REFERENCE_RMS = 0.05


def levels_dbfs(gain_db: tuple[float, float]) -> tuple[float, float]:
    """A ``gain_db`` range as window levels in dB re full scale (the daemon's level gauge)."""
    ref = 20 * math.log10(REFERENCE_RMS)
    return ref + gain_db[0], ref + gain_db[1]


def trained_levels_dbfs(weights: str | Path | None) -> tuple[float, float] | None:
    """The window levels (dBFS, low and high) the model in ``weights`` trained at.

    ``None`` when the file records no level range: weights not trained by
    ``listener train`` (the production checkpoint, a snapshot folder, a
    transformers model) or trained before the range was recorded; also for
    a band-normalised network, which no level is outside. A recipe that does
    not read is logged and treated the same: it only informs.
    """
    if weights is None:
        return None
    metadata, names = safetensors_header(weights)  # one read of the header for both
    recipe = None if BAND_NORM_KEY in names else metadata.get("recipe")
    if recipe is None:
        return None
    try:
        gain = _gain_db(recipe)
    except ValueError as err:
        log.warning("%s: metadata recipe: %s; the levels this model trained at are unknown",
                    weights, err)
        return None
    return None if gain is None else levels_dbfs(gain)


def _gain_db(recipe: str) -> tuple[float, float] | None:
    """``augment.gain_db`` of a recipe; ``None`` when it has none (trained before it was
    recorded). Raises ValueError when the recipe does not read."""
    doc = json.loads(recipe)  # JSONDecodeError is a ValueError
    augment = doc.get("augment") if isinstance(doc, dict) else None
    if not isinstance(augment, dict):
        raise ValueError("not a JSON object with an 'augment' object")
    gain = augment.get("gain_db")
    if gain is None:
        return None
    if not (isinstance(gain, list) and len(gain) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool)
                    and math.isfinite(v) for v in gain) and gain[0] <= gain[1]):
        raise ValueError(f"augment.gain_db is {str(gain)[:60]}, not [low, high] in dB")
    return float(gain[0]), float(gain[1])
