"""Detection and encounter events, and the records the sinks write for them.

An :class:`Event` is what the pipeline hands to every sink: a positive clip
(``kind="detection"``) or a step of an encounter (``encounter_start``,
``encounter_update``, ``encounter_end``). Its ``id`` is deterministic (uuid5
over station, kind, clip start and model), so an event re-emitted after a
restart carries the same id and receivers can de-duplicate on it.

Two record shapes are built here, both plain JSON-able dicts:

* :func:`orcahello_record`: exactly the document OrcaHello's moderator tools
  consume (one per positive clip);
* :func:`event_json`: the OrcaHello fields plus everything needed to audit a
  decision (thresholds, window scores, encounter), for the JSON-lines file and
  the webhook. ``docs/events.md`` has an example of each.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from listener.config import DetectionConfig, StationConfig
from listener.detection.labels import ClipLabels
from listener.detection.rule import ClipResult, Encounter, EncounterEvent

EVENT_KINDS = ("detection", "encounter_start", "encounter_update", "encounter_end")
SCHEMA = "listener.event/1"

# Fixed namespace: changing it would change every event id and break
# de-duplication across versions, so it is a constant, never configurable.
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/orcasound/listener/events")


@dataclass(frozen=True)
class Event:
    """One thing the sinks record. Build it with the ``make_*`` functions.

    ``model`` describes the scorer (``id``, ``architecture``, ``sha256`` of the weights,
    ...); ``detection`` carries the thresholds the decision used; ``clip`` is
    the clip that caused the event (``None`` for ``encounter_end``);
    ``encounter`` is :func:`encounter_summary` of the encounter, if any.
    """

    kind: str
    id: str
    station: StationConfig
    model: dict[str, Any]
    detection: DetectionConfig
    clip: ClipResult | None
    encounter_id: str | None
    encounter: dict[str, Any] | None
    created_utc: datetime
    stream_key: str
    labels: ClipLabels | None = None  # a multi-class model's labels for the clip

    @property
    def model_id(self) -> str:
        return str(self.model.get("id") or "")


def iso_utc(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC with millisecond precision and a ``Z``; naive means UTC."""
    if dt is None:
        return None
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clip_utc_end(clip: ClipResult) -> datetime | None:
    """The wall-clock end of a clip, when its start is known."""
    if clip.utc_start is None:
        return None
    return clip.utc_start + timedelta(seconds=clip.end_s - clip.start_s)


def _clip_key(clip: ClipResult, stream_key: str) -> str:
    """What identifies a clip across restarts: its UTC start, else stream + offset."""
    utc = iso_utc(clip.utc_start)
    return utc if utc is not None else f"{stream_key}@{clip.start_s:.3f}"


def event_id(station_id: str, kind: str, clip_key: str, model_id: str) -> str:
    """The deterministic idempotency key of an event (a uuid5 string)."""
    return str(uuid.uuid5(_NAMESPACE, "|".join((station_id, kind, clip_key, model_id))))


def encounter_summary(encounter: Encounter) -> dict[str, Any]:
    """Start/end (UTC, and ``start_t``/``end_t`` on the tracker's timeline: Unix
    seconds when the clips had UTC, else stream offsets), clip count, peak."""
    return {
        "id": encounter.id,
        "utc_start": iso_utc(encounter.start_utc),
        "utc_end": iso_utc(encounter.end_utc),
        "start_t": _num(encounter.start_t),
        "end_t": _num(encounter.end_t),
        "clip_count": encounter.clip_count,
        "peak_confidence": _num(encounter.peak_confidence),
    }


def make_detection_event(clip: ClipResult, *, station: StationConfig, model: dict[str, Any],
                         detection: DetectionConfig, stream_key: str,
                         encounter_id: str | None = None, encounter: Encounter | None = None,
                         created_utc: datetime | None = None,
                         labels: ClipLabels | None = None) -> Event:
    """The event for one positive clip; raises ``ValueError`` for a negative one.

    ``labels`` (a multi-class model's decision) adds OrcaHello's
    ``globalPredictionLabel``, ``predictions[].label`` and ``comments``.
    """
    if not clip.detected:
        raise ValueError(f"clip at {clip.start_s:.3f} s is not a detection "
                         f"(confidence {clip.confidence:.1f})")
    model_id = str(model.get("id") or "")
    return Event(
        kind="detection",
        id=event_id(station.id, "detection", _clip_key(clip, stream_key), model_id),
        station=station, model=dict(model), detection=detection, clip=clip,
        encounter_id=encounter_id if encounter is None else encounter.id,
        encounter=encounter_summary(encounter) if encounter is not None else None,
        created_utc=created_utc or datetime.now(UTC), stream_key=stream_key, labels=labels)


def make_encounter_event(ev: EncounterEvent, *, station: StationConfig, model: dict[str, Any],
                         detection: DetectionConfig, stream_key: str,
                         created_utc: datetime | None = None) -> Event:
    """The event for an encounter's start, update or end (``ev.kind``)."""
    kind = f"encounter_{ev.kind}"
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown encounter event kind {ev.kind!r}")
    # start/update are keyed by the clip that caused them; end has no clip and
    # happens once per encounter, so the encounter's start identifies it (the
    # same key its first clip had).
    enc = ev.encounter
    if ev.clip is not None:
        key = _clip_key(ev.clip, stream_key)
    else:
        key = iso_utc(enc.start_utc) or f"{stream_key}@{enc.start_t:.3f}"
    model_id = str(model.get("id") or "")
    return Event(
        kind=kind,
        id=event_id(station.id, kind, key, model_id),
        station=station, model=dict(model), detection=detection, clip=ev.clip,
        encounter_id=ev.encounter.id, encounter=encounter_summary(ev.encounter),
        created_utc=created_utc or datetime.now(UTC), stream_key=stream_key)


#: What a clip sink's file name looks like (:func:`clip_file_names`): what the
#: console serves from the clip folder, never a path.
CLIP_FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,200}\.(flac|wav|png)$")
_CLIP_ONLY = ".clip"  # between the stem and the extension of the clip-only pair


def clip_file_stem(event: Event) -> str:
    """``<station>_<UTC start>_<id prefix>``: readable, unique and derived from the event."""
    clip = event.clip
    if clip is not None and clip.utc_start is not None:
        when = clip.utc_start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    elif clip is not None:
        when = f"t{clip.start_s:09.1f}s"
    else:
        when = "noclip"
    return f"{event.station.id}_{when}_{event.id[:8]}"


def clip_file_names(event: Event, fmt: str, *, clip_only: bool = False) -> tuple[str, str]:
    """The clip sink's ``(audio, image)`` file names for ``event`` (``fmt``: wav|flac).

    ``clip_only`` names the pair that spans exactly the clip (``<stem>.clip.*``,
    what the OrcaHello record links to) rather than the one with context.
    """
    if fmt not in ("wav", "flac"):
        raise ValueError(f"audio format must be 'wav' or 'flac', got {fmt!r}")
    stem = clip_file_stem(event) + (_CLIP_ONLY if clip_only else "")
    return f"{stem}.{fmt}", f"{stem}.png"


def clip_only_name(name: str) -> str | None:
    """The clip-only file's name for one of the pair with context (``<stem>.<ext>``
    -> ``<stem>.clip.<ext>``, as :func:`clip_file_names` names them); None when
    ``name`` is no clip file's name."""
    stem, dot, ext = name.rpartition(".")
    exact = f"{stem}{_CLIP_ONLY}.{ext}"
    return exact if dot and stem and CLIP_FILE_NAME.match(exact) else None


def _join_uri(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name if base else name


def _num(x: float | None, digits: int = 6) -> float | None:
    """A JSON-safe number: rounded, and ``None`` for NaN/inf (strict JSON has neither)."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def orcahello_record(event: Event, audio_base_uri: str, image_base_uri: str,
                     audio_format: str = "flac", *, clip_only: bool = True) -> dict[str, Any]:
    """The OrcaHello detection document for a detection event.

    ``audioUri``/``imageUri`` are the base URIs joined with the clip sink's
    file names: by default the clip-only pair, because OrcaHello's portal
    places ``predictions[].startTime`` (seconds from the clip start) at that
    time of the audio file and picture; ``clip_only=False`` names the pair
    with context. ``predictions`` holds one entry per positive unit ("second").
    """
    clip = event.clip
    if clip is None:
        raise ValueError(f"event {event.id} ({event.kind}) has no clip")
    audio, image = clip_file_names(event, audio_format, clip_only=clip_only)
    station = event.station
    doc = {
        "id": event.id,
        "modelId": event.model_id,
        "audioUri": _join_uri(audio_base_uri, audio),
        "imageUri": _join_uri(image_base_uri, image),
        "reviewed": False,
        "timestamp": iso_utc(clip.utc_start),
        "whaleFoundConfidence": _num(clip.confidence),
        "location": {"id": station.id, "name": station.name,
                     "longitude": station.longitude, "latitude": station.latitude},
        "source_guid": station.id,
        "predictions": [
            {"id": i, "startTime": _num(s.start_s), "duration": event.detection.hop_s,
             "confidence": _num(s.score)}
            for i, s in enumerate(clip.positive_seconds)
        ],
    }
    if event.labels is not None:
        add_label_fields(doc, clip, event.labels)
    return doc


def add_label_fields(doc: dict[str, Any], clip: ClipResult, labels: ClipLabels) -> None:
    """OrcaHello's multi-class fields, as its PODS-AI orchestrator writes them.

    ``globalPredictionLabel`` (the clip's dominant label), a ``label`` on each
    prediction and ``comments`` (``"AI: transient and vessel"``). Only for
    multi-class models: the moderator portal shows a record *with* a
    ``globalPredictionLabel`` as PODS-AI's and one without as OrcaHello's.
    """
    doc["globalPredictionLabel"] = labels.label or ""
    unit_labels = [lab for s, lab in zip(clip.seconds, labels.second_labels, strict=False)
                   if s.positive]
    for pred, lab in zip(doc["predictions"], unit_labels, strict=False):
        pred["label"] = lab or labels.label or ""
    doc["comments"] = labels.comments


def clip_record(clip: ClipResult) -> dict[str, Any]:
    """The audit form of a clip: offsets, UTC, per-unit and per-window scores."""
    return {
        "start_s": _num(clip.start_s),
        "end_s": _num(clip.end_s),
        "utc_start": iso_utc(clip.utc_start),
        "utc_end": iso_utc(clip_utc_end(clip)),
        "detected": clip.detected,
        "confidence": _num(clip.confidence),
        "windows_expected": clip.windows_expected,
        "seconds": [{"start_s": _num(s.start_s), "score": _num(s.score),
                     "positive": s.positive} for s in clip.seconds],
        "windows": [{"start_s": _num(w.start_s), "end_s": _num(w.end_s),
                     "score": _num(w.score), "utc": iso_utc(w.utc)} for w in clip.windows],
    }


def event_json(event: Event, audio_base_uri: str = "", image_base_uri: str = "",
               audio_format: str = "flac") -> dict[str, Any]:
    """The full record of an event (JSON-lines file, webhook body).

    For a detection it is :func:`orcahello_record` (naming the clip files
    with context, which the console plays) plus audit fields; events
    without a clip carry the same keys with ``audioUri``/``imageUri`` null and
    no predictions; ``timestamp`` is the clip's start, or for ``encounter_end``
    the encounter's start.
    """
    if event.kind == "detection":
        doc = orcahello_record(event, audio_base_uri, image_base_uri, audio_format,
                               clip_only=False)
    else:
        station = event.station
        clip = event.clip
        enc = event.encounter or {}
        doc = {
            "id": event.id, "modelId": event.model_id, "audioUri": None, "imageUri": None,
            "reviewed": False,
            "timestamp": (iso_utc(clip.utc_start) if clip is not None
                          else enc.get("utc_start")),
            "whaleFoundConfidence": (_num(clip.confidence) if clip is not None
                                     else enc.get("peak_confidence")),
            "location": {"id": station.id, "name": station.name,
                         "longitude": station.longitude, "latitude": station.latitude},
            "source_guid": station.id, "predictions": [],
        }
    det = event.detection
    doc.update({
        "schema": SCHEMA,
        "kind": event.kind,
        "created_utc": iso_utc(event.created_utc),
        "stream_key": event.stream_key,
        "station": event.station.model_dump(mode="json"),
        "model": event.model,
        "thresholds": {"local_threshold": det.local_threshold,
                       "global_threshold": det.global_threshold,
                       "window_s": det.window_s, "hop_s": det.hop_s, "clip_s": det.clip_s},
        "clip": clip_record(event.clip) if event.clip is not None else None,
        "encounter_id": event.encounter_id,
        "encounter": event.encounter,
    })
    return doc
