"""Logging set-up: human-readable lines by default, JSON lines on request."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per record, for log collectors (Loki, Cloud Logging, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        station = getattr(record, "station", None)
        if station:
            doc["station"] = station
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class _StationFilter(logging.Filter):
    """Stamps every record with the station id (one station per process)."""

    def __init__(self, station: str) -> None:
        super().__init__()
        self.station = station

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "station", None):
            record.station = self.station
        return True


def setup_logging(level: str = "INFO", fmt: str = "text", station: str | None = None) -> None:
    """Configure the root logger (idempotent: replaces our handler).

    With ``station``, text lines carry ``[station]`` and JSON lines a
    ``station`` field, so logs of several stations can be told apart.
    """
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_listener", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler._listener = True  # type: ignore[attr-defined]
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        where = f" [{station}]" if station else ""
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s %(levelname)-7s{where} %(name)s: %(message)s"))
    if station:
        handler.addFilter(_StationFilter(station))
    root.addHandler(handler)
    root.setLevel(level.upper())
