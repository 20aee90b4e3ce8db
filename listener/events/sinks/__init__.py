"""Event sinks: where detections go (files, a webhook, clips, the log).

:func:`build_sinks` makes the sinks an ``outputs`` config section asks for;
the protocol and :func:`emit_all` are in :mod:`listener.events.sinks.base`.
Typical wiring in the daemon::

    sinks = build_sinks(cfg.outputs, cfg.station, history, metrics,
                        state_dir=cfg.state.dir)
    for sink in sinks:
        await sink.start()      # the webhook resumes its outbox here
    ...
    await emit_all(sinks, event, metrics)   # logs and counts failures
    ...
    for sink in sinks:
        await sink.close(timeout_s=10)
"""

from __future__ import annotations

from pathlib import Path

from listener.audio.history import AudioHistory
from listener.config import OutputsConfig, StationConfig
from listener.errors import SinkError
from listener.events.sinks.base import (
    MetricsHook,
    Sink,
    SinkMetricsLike,
    SinkMetricsSource,
    as_hook,
    emit_all,
)
from listener.events.sinks.clips import ClipSink
from listener.events.sinks.jsonl import JsonlSink
from listener.events.sinks.log import LogSink
from listener.events.sinks.orcahello import OrcaHelloSink
from listener.events.sinks.webhook import WebhookSink

__all__ = [
    "ClipSink", "JsonlSink", "LogSink", "MetricsHook", "OrcaHelloSink", "Sink",
    "SinkMetricsLike", "SinkMetricsSource", "WebhookSink", "build_sinks", "emit_all",
]


def build_sinks(outputs_cfg: OutputsConfig, station: StationConfig,
                history: AudioHistory | None,
                metrics_hook: MetricsHook | SinkMetricsSource | None = None, *,
                state_dir: Path | None = None) -> list[Sink]:
    """The sinks ``outputs_cfg`` enables, in emit order (durable records first).

    ``metrics_hook`` is ``metrics.sink_metrics`` or the ``Metrics`` object
    itself (or None). ``history`` is needed only for clips. The webhook's outbox is
    ``webhook.outbox_dir``, else ``<state_dir>/outbox/<station>/webhook``.
    Raises :class:`SinkError` for a sink that cannot be built (e.g. its token
    variable is unset).
    """
    clips_cfg = outputs_cfg.clips
    audio_format = clips_cfg.format if clips_cfg is not None else "flac"
    orca = outputs_cfg.orcahello
    uris = {"audio_base_uri": orca.audio_base_uri if orca else "",
            "image_base_uri": orca.image_base_uri if orca else "",
            "audio_format": audio_format}

    hook = as_hook(metrics_hook)

    def bound(name: str) -> SinkMetricsLike | None:
        return hook(name) if hook is not None else None

    sinks: list[Sink] = []
    if outputs_cfg.jsonl is not None:
        sinks.append(JsonlSink(outputs_cfg.jsonl, **uris))
    if orca is not None:
        sinks.append(OrcaHelloSink(orca, audio_format=audio_format))
    if outputs_cfg.webhook is not None:
        hook_cfg = outputs_cfg.webhook
        outbox = hook_cfg.outbox_dir
        if outbox is None:
            if state_dir is None:
                raise SinkError("webhook: set outputs.webhook.outbox_dir "
                                "(or give the daemon a state dir)")
            outbox = Path(state_dir) / "outbox" / station.id / "webhook"
        m = bound("webhook")
        sinks.append(WebhookSink(
            hook_cfg, outbox, on_depth=m.outbox_depth.set if m else None,
            on_delivered=m.deliveries.inc if m else None,
            on_failure=m.failures.inc if m else None, **uris))
    if clips_cfg is not None:
        if history is None:
            raise SinkError("clips: the clip sink needs the station's audio history")
        m = bound("clips")
        sinks.append(ClipSink(clips_cfg, history,
                              on_written=m.deliveries.inc if m else None,
                              on_failure=m.failures.inc if m else None,
                              clip_only=orca is not None))
    if outputs_cfg.log:
        sinks.append(LogSink())
    return sinks
