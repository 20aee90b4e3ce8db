"""What ``detect`` and ``detect --models`` print: times, the JSON, where the summary goes.

With ``--json -`` stdout carries the JSON alone, so the human summary goes to
stderr.
"""

from __future__ import annotations

import json
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


def write_json(outputs: list[dict[str, Any]], json_out: str) -> None:
    """One document per file (the document itself for one file); ``-`` = stdout."""
    text = json.dumps(outputs[0] if len(outputs) == 1 else outputs, indent=1)
    if json_out == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        write_text(Path(json_out), text + "\n")
