"""One OrcaHello detection document per positive clip: ``<dir>/<event id>.json``.

The document is :func:`~listener.events.records.orcahello_record`; its ``audioUri``
and ``imageUri`` point at the clip-only files the clip sink writes when this
sink is configured (exactly the clip, as OrcaHello's portal assumes; names follow
from the event, so this sink need not wait for them). Files are written
atomically, so a watcher that uploads the folder never reads half a file.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from listener.atomic import atomic_write
from listener.config import OrcaHelloSinkConfig
from listener.errors import SinkError
from listener.events.records import Event, orcahello_record


class OrcaHelloSink:
    """Writes the OrcaHello record of each detection event (other kinds are skipped).

    Args:
        cfg: the ``outputs.orcahello`` section.
        audio_format: the clip sink's format (``flac``/``wav``), for ``audioUri``.
    """

    reports_own_deliveries = False
    durable = True

    def __init__(self, cfg: OrcaHelloSinkConfig, audio_format: str = "flac") -> None:
        self.name = "orcahello"
        self.cfg = cfg
        self.dir = Path(cfg.dir)
        self.audio_format = audio_format

    async def start(self) -> None:
        """Nothing to do: the folder is created on the first write."""

    async def emit(self, event: Event) -> None:
        """Write ``<dir>/<event id>.json``; raises :class:`SinkError`."""
        if event.kind != "detection" or event.clip is None:
            return
        record = orcahello_record(event, self.cfg.audio_base_uri, self.cfg.image_base_uri,
                                  self.audio_format)
        try:
            body = json.dumps(record, ensure_ascii=False, allow_nan=False, indent=2)
        except ValueError as err:
            raise SinkError(f"orcahello: event {event.id} is not serialisable: {err}") from err
        path = self.dir / f"{event.id}.json"
        try:
            await asyncio.to_thread(atomic_write, path, body.encode("utf-8") + b"\n")
        except OSError as err:
            raise SinkError(f"orcahello: cannot write {path}: {err}") from err

    async def close(self, timeout_s: float) -> None:
        """Nothing buffered: every record is on disk when ``emit`` returns."""
