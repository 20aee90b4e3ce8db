"""One INFO log line per event, for people watching the daemon's output."""

from __future__ import annotations

import logging

from listener.events.records import Event, iso_utc

logger = logging.getLogger(__name__)


class LogSink:
    """Logs station, kind, UTC start, confidence and the positive seconds."""

    reports_own_deliveries = False
    durable = False

    def __init__(self) -> None:
        self.name = "log"

    async def start(self) -> None:
        """Nothing to do."""

    async def emit(self, event: Event) -> None:
        """Log one line (``station`` is also attached for JSON log output)."""
        clip = event.clip
        extra = {"station": event.station.id}
        if clip is None:
            enc = event.encounter or {}
            logger.info("%s %s encounter=%s utc=%s..%s clips=%s peak=%.1f", event.station.id,
                        event.kind, event.encounter_id, enc.get("utc_start"),
                        enc.get("utc_end"), enc.get("clip_count"),
                        enc.get("peak_confidence") or 0.0, extra=extra)
            return
        positives = ",".join(f"{s.start_s:g}" for s in clip.positive_seconds)
        logger.info("%s %s utc=%s offset=%.1fs confidence=%.1f positive_s=[%s] id=%s",
                    event.station.id, event.kind, iso_utc(clip.utc_start) or "-",
                    clip.start_s, clip.confidence, positives, event.id, extra=extra)

    async def close(self, timeout_s: float) -> None:
        """Nothing to flush."""
