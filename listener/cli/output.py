"""What ``detect`` and ``detect --models`` print: times, the JSON, where the summary goes.

With ``--json -`` stdout carries the JSON alone, so the human summary goes to
stderr.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import IO, Any

from listener.cli.exports import write_text


def fmt_time(seconds: float) -> str:
    """``m:ss.s`` (``h:mm:ss.s`` from an hour)."""
    # Rounded first: 59.96 s is 1:00.0, not 0:60.0.
    m, s = divmod(round(seconds, 1), 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def human_out(json_out: str | None) -> IO[str]:
    """Where the human summary goes: stderr when stdout carries the JSON."""
    return sys.stderr if json_out == "-" else sys.stdout


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float as None: JSON has no NaN literal."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(outputs: list[dict[str, Any]], json_out: str) -> None:
    """One document per file (the document itself for one file); ``-`` = stdout.

    A non-finite score is written as ``null``, never a bare ``NaN``.
    """
    doc = json_safe(outputs[0] if len(outputs) == 1 else outputs)
    text = json.dumps(doc, indent=1, allow_nan=False)
    if json_out == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        write_text(Path(json_out), text + "\n")
