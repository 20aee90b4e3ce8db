"""The operator console: pages, JSON API, clip files and the live event stream.

Routes (``docs/console.md`` has the details):

* pages ``/`` (the fleet overview with several stations, else the status),
  ``/overview``, ``/status``, ``/live``, ``/detections``; ``/static/<file>``,
  ``/favicon.ico``; an HTML 404 page (JSON under ``/api/``, see :mod:`.notfound`);
* ``GET /api/session``, ``/api/status``, ``/api/overview``, ``/api/coverage?from&to``,
  ``/api/detections``, ``/api/reviews/export``; ``POST /api/detections/<id>/review``;
* ``GET /clips/<station>/<file>``: clip audio and pictures (HTTP ranges);
* ``GET /api/live?station=``: server-sent events, one message per second with
  the new window scores and spectrogram columns (bounded: see :mod:`.spectro`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from listener.events.records import CLIP_FILE_NAME
from listener.web import live
from listener.web.httplog import escape
from listener.web.index import DetectionIndex, Entry, newest_first
from listener.web.notfound import not_found_middleware
from listener.web.overview import overview
from listener.web.reviews import ReviewStore, export_records, read_review
from listener.web.security import WriteGuard
from listener.web.views import StationView

logger = logging.getLogger(__name__)

_PAGES = {"/status": "status.html", "/overview": "overview.html", "/live": "live.html",
          "/detections": "detections.html"}
_STATIC = re.compile(r"^[a-z0-9_-]{1,40}\.(html|css|js|svg|ico)$")
_TYPES = {"html": "text/html", "css": "text/css", "js": "text/javascript",
          "svg": "image/svg+xml", "ico": "image/x-icon", "flac": "audio/flac",
          "wav": "audio/wav", "png": "image/png"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_RANGE_S = 31 * 86400.0
#: Far past any events file, and far below what ``itertools.islice`` accepts.
MAX_OFFSET = 10**9


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.json_response(doc, status=status, dumps=lambda d: json.dumps(d, allow_nan=False))


def _bad(text: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=text + "\n")


def parse_time(value: str, name: str) -> float:
    """Unix seconds from ``value``: a number, or ISO 8601 (naive means UTC)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad(f"{name}: not Unix seconds or an ISO 8601 time: {value[:60]!r}") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


class Console:
    """The console for one station or a fleet (one view per station).

    Args:
        views: one :class:`StationView` per station.
        bind_host: the address the server binds (decides whether writes need a token).
        token: the bearer token for writes on a non-loopback bind (see :mod:`.security`).
        tick_s / backfill_s / max_viewers: the live stream's pace, how much
            history a new viewer gets, and how many viewers at once.
        skipped: config files that were not loaded (``run --keep-going``) and
            why: the overview lists them, so a typo does not just go quiet.
    """

    def __init__(self, views: list[StationView], *, bind_host: str = "127.0.0.1",
                 token: str | None = None, tick_s: float = 1.0, backfill_s: float = 60.0,
                 max_viewers: int = 8, skipped: Sequence[tuple[str, str]] = ()) -> None:
        if not views:
            raise ValueError("the console needs at least one station view")
        self.views = {v.station_id: v for v in views}
        self.skipped = [{"file": path, "error": why} for path, why in skipped]
        self.indexes = {v.station_id: DetectionIndex(v.events_path, v.reviews_path,
                                                      v.station_id) for v in views}
        self.guard = WriteGuard(bind_host, token)
        self.tick_s = tick_s
        self.backfill_s = backfill_s
        self.max_viewers = max_viewers
        self._viewers = 0
        self.hubs = {v.station_id: live.LiveHub(v.live, v.station_id, tick_s=tick_s,
                                                backfill_s=backfill_s) for v in views}
        self._static = resources.files("listener.web") / "static"

    def add_routes(self, app: web.Application) -> None:
        for path in ("/", *_PAGES):
            app.router.add_get(path, self._page)
        app.router.add_get("/static/{name}", self._static_file)
        app.router.add_get("/favicon.ico", self._favicon)
        app.router.add_get("/api/session", self._session)
        app.router.add_get("/api/status", self._status)
        app.router.add_get("/api/overview", self._overview)
        app.router.add_get("/api/coverage", self._coverage)
        app.router.add_get("/api/detections", self._detections)
        app.router.add_post("/api/detections/{id}/review", self._review)
        app.router.add_get("/api/reviews/export", self._export)
        app.router.add_get("/api/live", self._live)
        app.router.add_get("/clips/{station}/{name}", self._clip)
        # Innermost, so the router's and the handlers' 404s get the console's page.
        app.middlewares.append(not_found_middleware(self._read_static("404.html")))

    def _view(self, request: web.Request, key: str = "station") -> StationView:
        name = request.match_info.get(key) or request.query.get(key)
        if not name:
            return next(iter(self.views.values()))
        view = self.views.get(name)
        if view is None:
            raise web.HTTPNotFound(text=f"no station {name[:64]!r} here\n")
        return view

    # -- pages and static files ---------------------------------------------

    def _read_static(self, name: str) -> bytes:
        item = self._static / name
        if not _STATIC.match(name) or not item.is_file():
            raise web.HTTPNotFound(text="not found\n")
        return item.read_bytes()

    async def _page(self, request: web.Request) -> web.Response:
        path = request.path
        if path == "/":  # a fleet opens on its overview, a lone station on its status
            path = "/overview" if len(self.views) > 1 or self.skipped else "/status"
        return web.Response(body=self._read_static(_PAGES[path]),
                            content_type="text/html", charset="utf-8")

    async def _favicon(self, request: web.Request) -> web.Response:
        return web.Response(body=self._read_static("favicon.ico"), content_type="image/x-icon",
                            headers={"Cache-Control": "max-age=86400"})

    async def _static_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = self._read_static(name)
        return web.Response(body=body, content_type=_TYPES[name.rsplit(".", 1)[1]],
                            charset="utf-8")

    # -- JSON API -----------------------------------------------------------

    async def _session(self, request: web.Request) -> web.Response:
        return _json({"stations": list(self.views), "csrf": self.guard.csrf,
                      "review_needs_token": self.guard.needs_token,
                      "skipped": len(self.skipped)})

    async def _status(self, request: web.Request) -> web.Response:
        # Off the loop: 50 stations' snapshots and ledgers must not stall other requests.
        return _json(await asyncio.to_thread(self._status_doc))

    def _status_doc(self) -> dict[str, Any]:
        out = []
        now = time.time()
        for view in self.views.values():
            doc = dict(view.status())
            doc["station_id"] = view.station_id
            if view.coverage is not None:
                doc["coverage"] = {
                    "hour": view.coverage.summary(now - 3600, now),
                    "day": view.coverage.summary(now - 86400, now),
                    "spans": [s.to_json() for s in view.coverage.spans(now - 86400, now)],
                }
            out.append(doc)
        return {"now": now, "stations": out}

    async def _overview(self, request: web.Request) -> web.Response:
        views = list(self.views.values())
        doc = await asyncio.to_thread(
            lambda: overview(views, [v.status() for v in views], self.indexes))
        return _json({**doc, "skipped": self.skipped})

    async def _coverage(self, request: web.Request) -> web.Response:
        view = self._view(request)
        now = time.time()
        start = parse_time(request.query.get("from", str(now - 3600)), "from")
        end = parse_time(request.query.get("to", str(now)), "to")
        if not end > start:
            raise _bad(f"from ({start}) must be before to ({end})")
        if end - start > MAX_RANGE_S:
            raise _bad(f"the range is {end - start:.0f} s; at most {MAX_RANGE_S:.0f} s")
        if view.coverage is None:
            raise web.HTTPNotFound(text=f"station {view.station_id} records no coverage\n")
        return _json({"station": view.station_id, **view.coverage.summary(start, end),
                      "spans": [s.to_json() for s in view.coverage.spans(start, end)]})

    async def _detections(self, request: web.Request) -> web.Response:
        q = request.query
        date = q.get("date", "")
        if date and not _DATE.match(date):
            raise _bad(f"date: expected YYYY-MM-DD, got {date[:40]!r}")
        reviewed = q.get("reviewed", "any")
        if reviewed not in ("any", "yes", "no"):
            raise _bad(f"reviewed: expected any, yes or no; got {reviewed[:20]!r}")
        limit = min(500, max(1, _whole(q.get("limit", "100"), "limit")))
        offset = max(0, _whole(q.get("offset", "0"), "offset"))
        if offset > MAX_OFFSET:
            raise _bad(f"offset: at most {MAX_OFFSET}, got {q['offset'][:30]}")
        views = [self._view(request)] if q.get("station") else list(self.views.values())
        items, total = await asyncio.to_thread(self._page_of, views, date, reviewed,
                                               offset, limit)
        return _json({"detections": items, "total": total, "offset": offset, "limit": limit})

    def _page_of(self, views: list[StationView], date: str, reviewed: str, offset: int,
                 limit: int) -> tuple[list[dict[str, Any]], int]:
        """One page of detections from the indexes, newest first, and how many match."""
        keys = {v.station_id: self.indexes[v.station_id].matching(date, reviewed)
                for v in views}
        page = newest_first(keys, offset, limit)
        items = []
        for station, event_id in page:
            for entry, review in self.indexes[station].entries([event_id]):
                items.append(_summary(self.views[station], entry, review))
        return items, sum(len(k) for k in keys.values())

    async def _review(self, request: web.Request) -> web.Response:
        self.guard.check(request)
        event_id = request.match_info["id"]
        review = await read_review(request, event_id)
        view = self._view(request)
        if await asyncio.to_thread(self.indexes[view.station_id].get, event_id) is None:
            raise web.HTTPNotFound(text=f"no detection {event_id} at {view.station_id}\n")
        assert view.reviews_path is not None  # set whenever events_path is
        await asyncio.to_thread(ReviewStore(view.reviews_path).append, review)
        logger.info("review of %s: %s by %s", event_id, review["SRKWFound"],
                    escape(review["moderator"]))
        return _json(review, status=201)

    async def _export(self, request: web.Request) -> web.Response:
        out: list[dict[str, Any]] = []
        views = [self._view(request)] if request.query.get("station") \
            else list(self.views.values())
        for view in views:
            out.extend(await asyncio.to_thread(self._station_export, view))
        return web.Response(
            text=json.dumps(out, ensure_ascii=False, indent=2, allow_nan=False),
            content_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="reviews-orcahello.json"'})

    def _station_export(self, view: StationView) -> list[dict[str, Any]]:
        pairs = self.indexes[view.station_id].reviewed_records()
        return export_records([d for d, _ in pairs], {str(d["id"]): r for d, r in pairs},
                              view.clips_dir)

    # -- files ----------------------------------------------------------------

    async def _clip(self, request: web.Request) -> web.StreamResponse:
        view = self._view(request)
        name = request.match_info["name"]
        if view.clips_dir is None or not CLIP_FILE_NAME.match(name):
            raise web.HTTPNotFound(text="not found\n")
        folder = view.clips_dir.resolve()
        path = (folder / name).resolve()
        if path.parent != folder or not path.is_file():
            raise web.HTTPNotFound(text=f"no clip file {name}\n")
        # FileResponse answers Range requests (206) and If-None-Match itself.
        return web.FileResponse(path, headers={
            "Content-Type": _TYPES[name.rsplit(".", 1)[1]], "Cache-Control": "max-age=3600"})

    # -- live -----------------------------------------------------------------

    async def _live(self, request: web.Request) -> web.StreamResponse:
        view = self._view(request)
        if self._viewers >= self.max_viewers:
            raise web.HTTPServiceUnavailable(
                text=f"{self.max_viewers} live viewers already; try again later\n")
        self._viewers += 1
        try:  # one hub per station computes the spectrogram for all its viewers
            return await live.serve(self.hubs[view.station_id], request)
        finally:
            self._viewers -= 1


def _whole(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _bad(f"{name}: expected a whole number, got {value[:20]!r}") from None


def _clip_url(view: StationView, name: str | None) -> str | None:
    if name is None or view.clips_dir is None:
        return None
    if not CLIP_FILE_NAME.match(name) or not (view.clips_dir / name).is_file():
        return None
    return f"/clips/{view.station_id}/{name}"


def _summary(view: StationView, det: Entry, review: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": det.id, "station": view.station_id, "timestamp": det.timestamp or None,
        "confidence": det.confidence, "model": det.model, "label": det.label,
        "audio": _clip_url(view, det.audio_name), "image": _clip_url(view, det.image_name),
        "review": review,
    }


def static_dir() -> Path:
    """The console's static files (for docs and tests)."""
    return Path(str(resources.files("listener.web") / "static"))
