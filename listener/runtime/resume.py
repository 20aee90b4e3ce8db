"""The per-station state file: where scoring stopped, so a restart resumes.

It records the end of the last clip whose events were handed to the sinks
(``clip_end_s`` on stream ``stream_key``) and the segment to resume after.
On restart the pipeline re-reads from one segment before that clip (to warm
the AAC decoder), scores nothing before ``clip_end_s`` and so emits no clip
twice and skips none, as long as those segments are still listed.

Written atomically (temporary file, fsync, rename, fsync of the folder), so a
crash leaves the old or the new state, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from listener.atomic import atomic_write
from listener.errors import ListenerError

log = logging.getLogger(__name__)

_VERSION = 1
_MAX_BYTES = 1024 * 1024
_MAX_OFFSET_S = 1e9


@dataclass
class StreamState:
    stream_key: str
    resume_sequence: int  # the last segment that needs no re-reading
    clip_end_s: float  # clips ending at or before this were emitted
    encounter: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StateStore:
    """Load and save :class:`StreamState` as JSON at ``<dir>/<station>.state.json``."""

    def __init__(self, directory: Path, station: str) -> None:
        self.path = Path(directory) / f"{station}.state.json"

    def load(self) -> StreamState | None:
        """The saved state, or None; a corrupt file is logged and ignored (kept aside)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise ListenerError(f"{self.path}: cannot read the state file: {err}") from err
        try:
            if len(raw) > _MAX_BYTES:
                raise ValueError(f"larger than {_MAX_BYTES} bytes")
            doc = json.loads(raw)
            if doc.get("version") != _VERSION:
                raise ValueError(f"unknown version {doc.get('version')!r}")
            clip_end_s = float(doc["clip_end_s"])
            # json reads NaN and Infinity; no stream offset is beyond 30 years.
            if not 0.0 <= clip_end_s <= _MAX_OFFSET_S:
                raise ValueError(f"clip_end_s {clip_end_s!r} is not a stream offset "
                                 f"(0 to {_MAX_OFFSET_S:g} s)")
            sequence = doc["resume_sequence"]
            # As saved: an int (json reads 1e400 as inf, and -7 would be accepted by int()).
            if type(sequence) is not int or sequence < 0:
                raise ValueError(f"resume_sequence {sequence!r} is not a segment sequence "
                                 f"number (an integer >= 0)")
            return StreamState(
                stream_key=str(doc["stream_key"]),
                resume_sequence=sequence,
                clip_end_s=clip_end_s,
                encounter=doc.get("encounter"),
                extra=dict(doc.get("extra") or {}),
            )
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError,
                RecursionError) as err:  # RecursionError: nesting too deep for json
            aside = self.path.with_suffix(".corrupt")
            log.error("%s: ignoring an unreadable state file (%s); moved to %s",
                      self.path, err, aside)
            os.replace(self.path, aside)
            return None

    def save(self, state: StreamState) -> None:
        """Replace the state file atomically (raises ``OSError``)."""
        doc = {"version": _VERSION, **asdict(state)}
        atomic_write(self.path, json.dumps(doc).encode("utf-8"))
