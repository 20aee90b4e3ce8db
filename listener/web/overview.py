"""The fleet overview: one compact row per station, readable at 50 stations.

``GET /api/overview`` answers ``{"now", "stations": [row, ...]}``; a row holds
what an operator scans a fleet for (state, lag, last segment, last error,
the last 24 h of coverage, detections today) and nothing that grows with
time: the coverage is :data:`CELLS` characters, one per 15 minutes, however
many spans the ledger holds, so the answer stays a few hundred bytes a station.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from listener.audio.level import SILENT_DBFS
from listener.web.coverage import CoverageLedger
from listener.web.index import DetectionIndex
from listener.web.views import StationView

#: Coverage cells over the last 24 h (15 minutes each).
CELLS = 96
DAY_S = 86400.0
#: A cell with more than this fraction lost is drawn as lost (a 20 s gap in 15 min shows).
LOST_MARK = 0.02
#: A cell scored over at least this fraction is drawn as scored.
SCORED_MARK = 0.98


def coverage_cells(ledger: CoverageLedger, now: float, cells: int = CELLS,
                   span_s: float = DAY_S) -> str:
    """One character per cell, oldest first: ``s`` scored, ``l`` lost (more than
    :data:`LOST_MARK`), ``p`` partly scored (the rest unknown), ``-`` unknown."""
    start = now - span_s
    width = span_s / cells
    scored = [0.0] * cells
    lost = [0.0] * cells
    for span in ledger.spans(start, now):
        first = max(0, int((span.start - start) // width))
        last = min(cells - 1, int((span.end - start) // width))
        for c in range(first, last + 1):
            c0 = start + c * width
            overlap = min(span.end, c0 + width) - max(span.start, c0)
            if overlap > 0:
                (scored if span.kind == "scored" else lost)[c] += overlap
    out = []
    for s, lo in zip(scored, lost, strict=True):
        if lo > LOST_MARK * width:
            out.append("l")
        elif s >= SCORED_MARK * width:
            out.append("s")
        else:
            out.append("p" if s > 0 else "-")
    return "".join(out)


def last_error_doc(status: dict[str, Any]) -> dict[str, Any] | None:
    """The status's ``last_error`` as ``{"message", "age_s"}``, or ``None``."""
    err = status.get("last_error")
    if not isinstance(err, dict) or not err.get("message"):
        return None
    age = err.get("age_s")
    doc = {"message": str(err["message"])[:300],
           "age_s": round(float(age), 1) if isinstance(age, int | float) else None}
    if isinstance(err.get("text"), str):  # the runtime's "latest.txt: HTTP 404 for 3 min"
        doc["text"] = err["text"][:300]
    return doc


def station_row(view: StationView, status: dict[str, Any], index: DetectionIndex,
                now: float) -> dict[str, Any]:
    """One station's overview row from its status snapshot, index and ledger."""
    today = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")
    level = status.get("audio_level_dbfs")
    row: dict[str, Any] = {
        "station_id": view.station_id, "name": status.get("name"),
        "state": status.get("state"), "ready": status.get("ready"),
        "readiness": status.get("readiness"), "lag_s": status.get("lag_s"),
        "audio_level_dbfs": level, "silent": level is not None and level <= SILENT_DBFS,
        "level_outside": list(status.get("level_outside") or []),
        "last_segment_s_ago": status.get("last_segment_s_ago"),
        "last_error": last_error_doc(status),
        "detections_today": index.count_on(today), "detections_total": len(index),
        "coverage": None,
    }
    if view.coverage is not None:
        row["coverage"] = {
            "cells": coverage_cells(view.coverage, now),
            "scored_ratio": view.coverage.summary(now - DAY_S, now)["scored_ratio"]}
    return row


def overview(views: list[StationView], statuses: list[dict[str, Any]],
             indexes: dict[str, DetectionIndex]) -> dict[str, Any]:
    """The ``/api/overview`` document from each view's status snapshot; blocking (the
    indexes may read new lines): the console runs it, and the snapshots, off the loop."""
    now = time.time()
    return {"now": now, "cell_s": DAY_S / CELLS,
            "stations": [station_row(v, st, indexes[v.station_id], now)
                         for v, st in zip(views, statuses, strict=True)]}
