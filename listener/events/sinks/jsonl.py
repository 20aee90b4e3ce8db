"""Append-only JSON lines: one :func:`~listener.events.records.event_json` per line.

Each line is written with one ``write`` call, then flushed and fsynced, so
after a power cut the file holds every acknowledged event. A crash *during*
a write can leave a partial last line; it is never rewritten (the file is
append-only), but the next start begins on a fresh line so later records stay
intact. Readers must therefore skip a line that is not valid JSON, as
:func:`read_records` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

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
        self._fh: IO[bytes] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Nothing to do: the file is opened on the first event."""

    def _open(self) -> IO[bytes]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "ab")
        # A torn last line from a crash: start on a new line rather than glue
        # the next record onto it (which would make both unreadable).
        size = fh.seek(0, os.SEEK_END)
        if size:
            with open(self.path, "rb") as rd:
                rd.seek(size - 1)
                if rd.read(1) != b"\n":
                    logger.warning("%s: last line is incomplete (crash?); leaving it, "
                                   "appending on a new line", self.path)
                    fh.write(b"\n")
        return fh

    def _write(self, line: bytes) -> None:
        if self._fh is None:
            self._fh = self._open()
        start = self._fh.tell()
        try:
            self._fh.write(line + b"\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError:
            # A full disk may have taken part of the line: cut it off, so the
            # retry appends a whole line where this one began.
            with contextlib.suppress(OSError):
                os.truncate(self.path, start)
            raise

    async def emit(self, event: Event) -> None:
        """Append one line and make it durable; raises :class:`SinkError`."""
        try:
            line = dumps_event(event, **self._uris)
        except ValueError as err:
            raise SinkError(f"jsonl: event {event.id} is not serialisable: {err}") from err
        async with self._lock:
            try:
                await asyncio.to_thread(self._write, line)
            except OSError as err:
                # Drop the handle so the next event retries opening the file
                # (the disk may come back, or the file may have been rotated).
                self._close_file()
                raise SinkError(f"jsonl: cannot append to {self.path}: {err}") from err

    def _close_file(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                logger.warning("%s: error closing", self.path, exc_info=True)
            self._fh = None

    async def close(self, timeout_s: float) -> None:
        """Close the file (every line is already on disk)."""
        async with self._lock:
            self._close_file()
