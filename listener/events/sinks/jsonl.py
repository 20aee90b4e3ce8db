"""Append-only JSON lines: one :func:`~listener.events.records.event_json` per line.

Each line is written with one ``write`` call, then flushed and fsynced, so
after a power cut the file holds every acknowledged event. A crash *during*
a write can leave a partial last line; it is never rewritten (the file is
append-only), but the next start begins on a fresh line so later records stay
intact. A rename or deletion of the file (logrotate) is noticed before the
next write, which goes to a new file at the path (:mod:`listener.appendlog`).
Readers must therefore skip a line that is not valid JSON, as
:func:`read_records` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from listener.appendlog import AppendFile
from listener.config import JsonlSinkConfig
from listener.errors import SinkError
from listener.events.records import Event, event_json

logger = logging.getLogger(__name__)


def dumps_event(event: Event, **uris: str) -> bytes:
    """Strict one-line JSON of an event (no NaN, UTF-8)."""
    return json.dumps(event_json(event, **uris), ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines file, skipping lines that are not JSON objects.

    A torn line (from a crash mid-write) is logged and skipped, not an error.
    """
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                logger.warning("%s:%d: skipping a line that is not JSON (torn write?)",
                               path, number)
                continue
            if isinstance(doc, dict):
                yield doc


class JsonlSink:
    """Appends each event to ``cfg.path`` (parent folders are created).

    Args:
        cfg: the ``outputs.jsonl`` section.
        audio_base_uri / image_base_uri / audio_format: how ``audioUri`` and
            ``imageUri`` are formed (the clip sink's settings, when present).
    """

    reports_own_deliveries = False
    durable = True

    def __init__(self, cfg: JsonlSinkConfig, *, audio_base_uri: str = "",
                 image_base_uri: str = "", audio_format: str = "flac") -> None:
        self.name = "jsonl"
        self.path = Path(cfg.path)
        self._uris = {"audio_base_uri": audio_base_uri, "image_base_uri": image_base_uri,
                      "audio_format": audio_format}
        # Reopened by path when logrotate renames the file or someone deletes it.
        self._file = AppendFile(self.path)
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Nothing to do: the file is opened on the first event."""

    async def emit(self, event: Event) -> None:
        """Append one line and make it durable; raises :class:`SinkError`."""
        try:
            line = dumps_event(event, **self._uris)
        except ValueError as err:
            raise SinkError(f"jsonl: event {event.id} is not serialisable: {err}") from err
        async with self._lock:
            try:
                await asyncio.to_thread(self._file.append, line + b"\n")
            except OSError as err:
                # The file is closed: the next event opens the path again
                # (the disk may come back).
                raise SinkError(f"jsonl: cannot append to {self.path}: {err}") from err

    async def close(self, timeout_s: float) -> None:
        """Close the file (every line is already on disk)."""
        async with self._lock:
            self._file.close()
