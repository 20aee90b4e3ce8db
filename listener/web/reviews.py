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

Submitted text is checked before it is stored or logged: no control
characters (but newlines and tabs in ``comments``), no line separators or
bidi overrides, no lone surrogates (which cannot even be encoded as UTF-8);
each refusal is a ``400`` naming the field, and messages quote values as
JSON, never as Python ``repr``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from listener.appendlog import AppendFile
from listener.events.records import clip_only_name, iso_utc
from listener.events.sinks.jsonl import read_records
from listener.web.guard import LIMITS_KEY
from listener.web.httplog import escape

VERDICTS = ("yes", "no", "don't know")
#: The OrcaHello detection fields the export carries over from the event record.
ORCAHELLO_FIELDS = ("id", "modelId", "audioUri", "imageUri", "timestamp",
                    "whaleFoundConfidence", "location", "source_guid", "predictions")
_TAG = re.compile(r"[\w .:/+-]{1,40}")
_ID = re.compile(r"[0-9a-fA-F-]{8,64}")
#: Line and paragraph separators, bidi embeddings, overrides and isolates.
_INVISIBLE = frozenset([0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])
MAX_BODY = 16384
_DISCARD_MAX = 1024 * 1024
MAX_COMMENT = 2000
MAX_TAGS = 20
MAX_MODERATOR = 80


class ReviewError(ValueError):
    """A review that cannot be stored; the message says which field and why."""


def shown(value: Any, limit: int = 60) -> str:
    """How a submitted value is quoted back: JSON text (escaped), or what kind of value it is."""
    if isinstance(value, str):
        return json.dumps(value[:limit]) + ("…" if len(value) > limit else "")
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return "a number"
    return "a list" if isinstance(value, list) else "an object"


def check_text(name: str, value: str, *, newlines: bool = False) -> None:
    """Refuse control characters (but tab and newline where ``newlines``), line and
    paragraph separators, bidi overrides and lone surrogates, naming the field."""
    for pos, ch in enumerate(value):
        code = ord(ch)
        if newlines and ch in "\t\n\r":
            continue
        if 0xD800 <= code < 0xE000:
            what = "a lone surrogate"
        elif unicodedata.category(ch) == "Cc" or code in _INVISIBLE:
            what = "a control character"
        else:
            continue
        raise ReviewError(f"{name}: {what} (U+{code:04X}) at character {pos + 1}; "
                          "not allowed here")


def _text_field(doc: dict[str, Any], name: str, limit: int, *, newlines: bool) -> str:
    value = doc.get(name, "")
    if not isinstance(value, str):
        raise ReviewError(f"{name}: must be text; got {shown(value)}")
    if len(value) > limit:
        raise ReviewError(f"{name}: at most {limit} characters; got {len(value)}")
    check_text(name, value, newlines=newlines)
    return value


def make_review(event_id: str, doc: dict[str, Any], *,
                now: datetime | None = None) -> dict[str, Any]:
    """Validate a submitted review; return the line to store. Raises :class:`ReviewError`."""
    if not _ID.fullmatch(event_id):
        raise ReviewError(f"id: not an event id: {shown(event_id)}")
    verdict = doc.get("SRKWFound")
    if verdict not in VERDICTS:
        got = "missing" if "SRKWFound" not in doc else f"got {shown(verdict)}"
        raise ReviewError(f"SRKWFound: {got}; choose yes, no or don't know")
    raw_tags = doc.get("tags", "")
    if isinstance(raw_tags, list) and all(isinstance(t, str) for t in raw_tags):
        raw_tags = ";".join(raw_tags)
    if not isinstance(raw_tags, str):
        raise ReviewError(f"tags: must be a ';'-separated string or a list of strings; "
                          f"got {shown(raw_tags)}")
    check_text("tags", raw_tags)
    tags = [t.strip() for t in raw_tags.split(";") if t.strip()]
    if len(tags) > MAX_TAGS or any(not _TAG.fullmatch(t) for t in tags):
        raise ReviewError(f"tags: at most {MAX_TAGS}, each 1-40 letters, digits, spaces "
                          f"or .:/+-_; got {shown(raw_tags, 100)}")
    comments = _text_field(doc, "comments", MAX_COMMENT, newlines=True)
    moderator = _text_field(doc, "moderator", MAX_MODERATOR, newlines=False)
    return {"id": event_id, "SRKWFound": verdict, "tags": ";".join(tags),
            "comments": comments, "moderator": moderator.strip() or "console",
            "dateModerated": iso_utc(now or datetime.now(UTC)), "reviewed": True}


async def read_review(request: web.Request, event_id: str) -> dict[str, Any]:
    """The review a request submits, validated; HTTP errors say what is wrong.

    The body is read here, counting the bytes actually received whatever the
    transfer encoding (a chunked body has no ``Content-Length`` to check),
    within the server's ``read_timeout_s``; over :data:`MAX_BODY` it is ``413``.
    """
    limits = request.app.get(LIMITS_KEY)
    timeout_s = limits.read_timeout_s if limits is not None else 5.0
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send the review as application/json\n")
    length = request.content_length or 0
    if length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=length,
                                            text=f"a review is at most {MAX_BODY} bytes\n")
    try:
        async with asyncio.timeout(timeout_s):
            body = await _read_capped(request)
    except TimeoutError:
        raise web.HTTPRequestTimeout(text=f"the review body did not arrive within "
                                          f"{timeout_s:g} s\n") from None
    try:
        doc = json.loads(body)
        if not isinstance(doc, dict):
            raise ReviewError(f"the body must be a JSON object; got {shown(doc)}")
        return make_review(event_id, doc)
    except ReviewError as err:
        raise web.HTTPBadRequest(text=f"{err}\n") from err
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise web.HTTPBadRequest(text=f"the body is not JSON in UTF-8: "
                                      f"{escape(str(err).splitlines()[0], 120)}\n") from err


async def _read_capped(request: web.Request) -> bytes:
    body = bytearray()
    while chunk := await request.content.readany():
        body += chunk
        if len(body) > MAX_BODY:
            # Read on (bounded) before answering: closing with unread input
            # makes the kernel reset the connection, and the 413 would be lost.
            seen = len(body)
            while seen < _DISCARD_MAX and (chunk := await request.content.readany()):
                seen += len(chunk)
            raise web.HTTPRequestEntityTooLarge(
                max_size=MAX_BODY, actual_size=seen,
                text=f"a review is at most {MAX_BODY} bytes; got {seen} or more\n")
    return bytes(body)


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


def _clip_exact(doc: dict[str, Any], clips_dir: Path | None) -> None:
    """Name the clip-exact pair (``<stem>.clip.*``) in ``doc`` when both files exist.

    The events file names the files with context, but ``predictions[].startTime``
    counts from the clip start, which is where OrcaHello's portal (and a
    moderator) looks in the named audio and picture; the clip sink writes the
    clip-exact pair when ``outputs.orcahello`` is set.
    """
    if clips_dir is None:
        return
    swapped = {}
    for key in ("audioUri", "imageUri"):
        uri = doc.get(key)
        head, sep, name = str(uri or "").rpartition("/")
        exact = clip_only_name(name) if uri else None
        if exact is None or not (clips_dir / exact).is_file():
            return
        swapped[key] = f"{head}{sep}{exact}"
    doc.update(swapped)


def export_records(detections: list[dict[str, Any]], reviews: dict[str, dict[str, Any]],
                   clips_dir: Path | None = None) -> list[dict[str, Any]]:
    """OrcaHello moderator records for the reviewed detections, oldest first; each
    names its clip-exact files where ``clips_dir`` holds them (:func:`_clip_exact`)."""
    out = []
    for det in sorted(detections, key=lambda d: str(d.get("timestamp") or "")):
        review = reviews.get(str(det.get("id")))
        if review is None:
            continue
        doc = {k: det.get(k) for k in ORCAHELLO_FIELDS}
        _clip_exact(doc, clips_dir)
        doc.update({"reviewed": True, "SRKWFound": review["SRKWFound"],
                    "tags": review.get("tags", ""), "comments": review.get("comments", ""),
                    "moderator": review.get("moderator", ""),
                    "dateModerated": review.get("dateModerated")})
        out.append(doc)
    return out
