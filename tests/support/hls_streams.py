"""What a LiveHlsServer serves and records: its playlists, injected faults, requests."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from support.hls_server import LiveHlsServer

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"


@dataclass
class Fault:
    """One injected misbehaviour, consumed by one request to its path.

    kind: ``status`` (answer ``status`` with ``headers``), ``delay`` (sleep
    ``delay_s`` then answer normally), ``truncate`` (announce the full
    Content-Length, send half, close), ``nolength`` (send the body without
    Content-Length, or with ``headers``' malformed one, end it by closing),
    ``trickle`` (send the body in 1 kB pieces ``delay_s`` apart) or ``drop``
    (close without answering).
    """

    kind: str
    status: int = 500
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # ``status``: what to send instead of "injected fault"


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered (``status`` 0: dropped)."""

    path: str
    status: int
    at: float  # time.monotonic()
    client_port: int  # the same port twice = a reused connection


@dataclass
class _Folder:
    segments: list[tuple[str, bytes | None, float]] = field(default_factory=list)
    ended: bool = False


class HlsStream:
    """A generic live HLS stream with a sliding window (see :meth:`LiveHlsServer.add_stream`)."""

    def __init__(self, server: LiveHlsServer, path: str, window: int, media_sequence: int,
                 program_date_time: datetime | None, target_duration: int) -> None:
        self._server = server
        self.path = path
        self.window = window
        self.first_sequence = media_sequence
        self.target_duration = target_duration
        self._next_pdt = program_date_time
        # (sequence, name, data, duration, discontinuity, pdt)
        self.segments: list[tuple[int, str, bytes, float, bool, datetime | None]] = []
        self.ended = False

    @property
    def dir(self) -> str:
        """The folder part of the playlist path, where segments live."""
        return self.path.rsplit("/", 1)[0]

    def publish(self, data: bytes, duration_s: float, *, discontinuity: bool = False,
                program_date_time: datetime | None = None) -> int:
        """Append a segment; returns its media sequence number."""
        with self._server.lock:
            seq = self.first_sequence + len(self.segments)
            pdt = program_date_time or self._next_pdt
            self.segments.append((seq, f"seg{seq}.ts", data, duration_s, discontinuity, pdt))
            self._next_pdt = None if pdt is None else pdt + timedelta(seconds=duration_s)
            return seq

    def finish(self) -> None:
        """Add ``#EXT-X-ENDLIST``."""
        with self._server.lock:
            self.ended = True

    def url_of(self, sequence: int) -> str:
        """Absolute URL of a segment."""
        return self._server.url(f"{self.dir}/seg{sequence}.ts")

    def playlist(self) -> str:
        listed = self.segments[-self.window:] if self.window else self.segments
        first = listed[0][0] if listed else self.first_sequence + len(self.segments)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{self.target_duration}",
                 f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for _seq, name, _data, duration, disc, pdt in listed:
            if disc:
                lines.append("#EXT-X-DISCONTINUITY")
            if pdt is not None:
                lines.append("#EXT-X-PROGRAM-DATE-TIME:"
                             + pdt.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
            lines += [f"#EXTINF:{duration:.6f},", name]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


def _orcasound_playlist(folder: _Folder) -> str:
    """What ffmpeg's segment muxer writes (see docs/sources.md)."""
    target = max(math.ceil(d) for _, _, d in folder.segments)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-ALLOW-CACHE:YES", f"#EXT-X-TARGETDURATION:{target}"]
    for name, _, duration in folder.segments:
        lines += [f"#EXTINF:{duration:.6f},", name]
    if folder.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
