"""What every config section shares: strict, frozen models and bounded number types."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
# Durations get upper bounds too: a finite but absurd value (1e308 s) would
# overflow the event loop's clock or make a wait that never ends.
Timeout = Annotated[float, Field(gt=0, le=3600)]
Seconds = Annotated[float, Field(gt=0, le=7 * 86400)]
SecondsOrZero = Annotated[float, Field(ge=0, le=7 * 86400)]


class _Section(BaseModel):
    # .inf and .nan are valid YAML floats; no setting here means them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def hop_problem(window_s: float, hop_s: float) -> str | None:
    """Why windows of ``window_s`` every ``hop_s`` leave audio unscored, or None.

    The one statement of the rule: the station's windows, a model entry's
    and a planned model's (defaults resolved) are all checked with it.
    """
    if hop_s > window_s:
        return f"hop_s ({hop_s}) must not exceed window_s ({window_s})"
    return None
