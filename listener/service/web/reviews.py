"""Reviews of detections: append-only JSON lines, and the OrcaHello moderator export.

Each review is one line with the fields OrcaHello's moderator records use::

    {"id": "<event id>", "SRKWFound": "yes" | "no" | "don't know",
     "tags": "call;boat", "comments": "...", "moderator": "ana",
     "dateModerated": "2026-11-30T07:01:02.345Z", "reviewed": true}

``tags`` is OrcaHello's ``;``-separated string. A later line for the same id
replaces the earlier one (a moderator changed their mind); nothing is ever
rewritten. Lines are written with one ``write`` each, flushed and fsynced;
a torn last line (crash mid-write) is skipped on read.

The export (:func:`export_records`) is a JSON array of OrcaHello detection
documents (the record the ``orcahello`` sink writes) with the moderator
fields filled in: the "OrcaHello moderator records JSON" that
``listener evaluate`` reads as labels.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from listener.appendlog import AppendFile
from listener.events.records import iso_utc
from listener.events.sinks.jsonl import read_records

VERDICTS = ("yes", "no", "don't know")
#: The OrcaHello detection fields the export carries over from the event record.
ORCAHELLO_FIELDS = ("id", "modelId", "audioUri", "imageUri", "timestamp",
                    "whaleFoundConfidence", "location", "source_guid", "predictions")
_TAG = re.compile(r"^[\w .:/+-]{1,40}$")
_ID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
MAX_COMMENT = 2000
MAX_TAGS = 20
MAX_MODERATOR = 80


class ReviewError(ValueError):
    """A review that cannot be stored; the message says which field and why."""


def make_review(event_id: str, doc: dict[str, Any], *,
                now: datetime | None = None) -> dict[str, Any]:
    """Validate a submitted review; return the line to store. Raises :class:`ReviewError`."""
    if not _ID.match(event_id):
        raise ReviewError(f"id: not an event id: {event_id[:80]!r}")
    verdict = doc.get("SRKWFound")
    if verdict not in VERDICTS:
        raise ReviewError(f"SRKWFound: must be one of {', '.join(VERDICTS)}; got {verdict!r}")
    raw_tags = doc.get("tags", "")
    if isinstance(raw_tags, list):
        raw_tags = ";".join(str(t) for t in raw_tags)
    if not isinstance(raw_tags, str):
        raise ReviewError("tags: must be a ';'-separated string or a list of strings")
    tags = [t.strip() for t in raw_tags.split(";") if t.strip()]
    if len(tags) > MAX_TAGS or any(not _TAG.match(t) for t in tags):
        raise ReviewError(f"tags: at most {MAX_TAGS}, each 1-40 letters, digits, spaces "
                          f"or .:/+-_; got {raw_tags[:100]!r}")
    comments, moderator = doc.get("comments", ""), doc.get("moderator", "")
    if not isinstance(comments, str) or len(comments) > MAX_COMMENT:
        raise ReviewError(f"comments: must be text of at most {MAX_COMMENT} characters")
    if not isinstance(moderator, str) or len(moderator) > MAX_MODERATOR:
        raise ReviewError(f"moderator: must be text of at most {MAX_MODERATOR} characters")
    return {"id": event_id, "SRKWFound": verdict, "tags": ";".join(tags),
            "comments": comments, "moderator": moderator.strip() or "console",
            "dateModerated": iso_utc(now or datetime.now(UTC)), "reviewed": True}


class ReviewStore:
    """The reviews file of one station (created with its folder on the first review)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, review: dict[str, Any]) -> None:
        """Append one review and make it durable; raises ``OSError``."""
        line = json.dumps(review, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            with AppendFile(self.path) as fh:  # torn last line and fsync handled there
                fh.append(line)

    def latest(self) -> dict[str, dict[str, Any]]:
        """The latest review per event id."""
        if not self.path.exists():
            return {}
        out: dict[str, dict[str, Any]] = {}
        for doc in read_records(self.path):
            if isinstance(doc.get("id"), str) and doc.get("SRKWFound") in VERDICTS:
                out[doc["id"]] = doc
        return out


def export_records(detections: list[dict[str, Any]],
                   reviews: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """OrcaHello moderator records for the reviewed detections, oldest first."""
    out = []
    for det in sorted(detections, key=lambda d: str(d.get("timestamp") or "")):
        review = reviews.get(str(det.get("id")))
        if review is None:
            continue
        doc = {k: det.get(k) for k in ORCAHELLO_FIELDS}
        doc.update({"reviewed": True, "SRKWFound": review["SRKWFound"],
                    "tags": review.get("tags", ""), "comments": review.get("comments", ""),
                    "moderator": review.get("moderator", ""),
                    "dateModerated": review.get("dateModerated")})
        out.append(doc)
    return out
