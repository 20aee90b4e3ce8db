"""A live HLS origin on 127.0.0.1 for tests, serving from memory.

:class:`LiveHlsServer` runs ``http.server.ThreadingHTTPServer`` on port 0 in a
thread and serves:

- an Orcasound-style bucket: ``/<node>/latest.txt``,
  ``/<node>/hls/<ts>/live.m3u8`` (generated on each request from the
  segments published so far, in ffmpeg's segment-muxer form, 404 until the
  first segment exists, as on S3) and ``/<node>/hls/<ts>/liveNNN.ts``;
- generic HLS streams (:meth:`LiveHlsServer.add_stream`): a sliding-window
  media playlist with media sequence, optional program date-time,
  discontinuities and ENDLIST once finished;
- any fixed file (:meth:`LiveHlsServer.put`), e.g. a master playlist.

Faults are injected per path and consumed one request at a time: an HTTP
status (e.g. 404 three times, then the real answer), a delay before
answering, a truncated body (Content-Length larger than what is sent, then the
connection is closed) or a dropped connection. Every request is logged.

The playlists, faults and request records are in ``tests/support/hls_streams.py``.
Segment bytes come from ``tests/support/hls_media.py`` (real MPEG-TS/AAC made by
ffmpeg's segment muxer, like Orcasound's, or the real Orcasound segments);
the names of both are re-exported here.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from support.hls_media import (
    LPOD_WAV,
    REAL_DURATIONS,
    REAL_FOLDER,
    REAL_FOLDER_TS,
    TsSegment,
    load_real_segments,
    make_ffmpeg_segments,
)
from support.hls_streams import (
    PLAYLIST_TYPE,
    Fault,
    HlsStream,
    RequestRecord,
    _Folder,
    _orcasound_playlist,
)

__all__ = ["LPOD_WAV", "REAL_DURATIONS", "REAL_FOLDER", "REAL_FOLDER_TS", "Fault", "HlsStream",
           "LiveHlsServer", "RequestRecord", "TsSegment", "load_real_segments",
           "make_ffmpeg_segments"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is exercised
    server: _Server

    def do_GET(self) -> None:
        self.server.owner.handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log replaces stderr noise


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LiveHlsServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out leave broken pipes behind; expected here


class LiveHlsServer:
    """An in-memory HLS origin on 127.0.0.1; use as a context manager."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._files: dict[str, tuple[bytes, str]] = {}
        self._nodes: dict[str, dict[int, _Folder]] = {}
        self._latest: dict[str, int] = {}
        self._streams: dict[str, HlsStream] = {}
        self._faults: dict[str, list[Fault]] = {}
        self._log: list[RequestRecord] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------
    def start(self) -> LiveHlsServer:
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> LiveHlsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    # --- content -----------------------------------------------------------
    def put(self, path: str, data: bytes | str, content_type: str = "application/octet-stream"
            ) -> str:
        """Serve fixed bytes at ``path``; returns the URL."""
        raw = data.encode() if isinstance(data, str) else data
        with self.lock:
            self._files[path] = (raw, content_type)
        return self.url(path)

    def start_folder(self, node: str, ts: int) -> str:
        """A node (re)start: new ``hls/<ts>`` folder, ``latest.txt`` rewritten. Returns its key."""
        with self.lock:
            self._nodes.setdefault(node, {})[ts] = _Folder()
            self._latest[node] = ts
        return f"{node}/hls/{ts}"

    def publish(self, node: str, data: bytes | None, duration_s: float,
                folder: int | None = None) -> int:
        """List the next ``liveNNN.ts`` of a folder (default: latest). ``data`` None:
        listed in the playlist but the object never appears (404). Returns the sequence."""
        with self.lock:
            f = self._nodes[node][folder if folder is not None else self._latest[node]]
            seq = len(f.segments)
            f.segments.append((f"live{seq:03d}.ts", data, duration_s))
            return seq

    def end_folder(self, node: str, folder: int | None = None) -> None:
        """Write ``#EXT-X-ENDLIST`` into a folder's playlist."""
        with self.lock:
            self._nodes[node][folder if folder is not None else self._latest[node]].ended = True

    def segment_url(self, node: str, ts: int, sequence: int) -> str:
        return self.url(f"/{node}/hls/{ts}/live{sequence:03d}.ts")

    def add_stream(self, path: str = "/live/index.m3u8", *, window: int = 5,
                   media_sequence: int = 0, program_date_time: datetime | None = None,
                   target_duration: int = 10) -> HlsStream:
        """A generic live stream at ``path`` listing the last ``window`` segments."""
        stream = HlsStream(self, path, window, media_sequence, program_date_time,
                           target_duration)
        with self.lock:
            self._streams[path] = stream
        return stream

    def remove_stream(self, path: str) -> None:
        """The stream at ``path`` is gone: its playlist and segments answer 404."""
        with self.lock:
            del self._streams[path]

    # --- faults and log ----------------------------------------------------
    def inject(self, path: str, fault: Fault, times: int = 1) -> None:
        """Queue ``fault`` for the next ``times`` requests to ``path``."""
        with self.lock:
            self._faults.setdefault(path, []).extend([fault] * times)

    def fail(self, path: str, status: int = 500, times: int = 1,
             headers: dict[str, str] | None = None) -> None:
        """Answer ``status`` (with ``headers``) to the next ``times`` requests."""
        self.inject(path, Fault("status", status=status, headers=headers or {}), times)

    def serve_instead(self, path: str, body: bytes, times: int = 1, status: int = 200) -> None:
        """Answer the next ``times`` requests with ``body`` (a stale or garbage copy)."""
        self.inject(path, Fault("status", status=status, body=body), times)

    def delay(self, path: str, seconds: float, times: int = 1) -> None:
        """Sleep ``seconds`` before answering (a slow origin: read timeouts)."""
        self.inject(path, Fault("delay", delay_s=seconds), times)

    def truncate(self, path: str, times: int = 1) -> None:
        """Announce the full Content-Length, send half the body, close."""
        self.inject(path, Fault("truncate"), times)

    def shorten(self, path: str, times: int = 1) -> None:
        """Serve the first half of the body as if it were all (a body cut at the origin)."""
        self.inject(path, Fault("half"), times)

    def no_length(self, path: str, times: int = 1) -> None:
        """Send the body without Content-Length (ended by closing)."""
        self.inject(path, Fault("nolength"), times)

    def bad_length(self, path: str, value: str, times: int = 1) -> None:
        """Send the body under ``Content-Length: value`` (malformed), ended by closing."""
        self.inject(path, Fault("nolength", headers={"Content-Length": value}), times)

    def trickle(self, path: str, piece_delay_s: float, times: int = 1) -> None:
        """Send the body 1 kB at a time, ``piece_delay_s`` apart (a crawling link)."""
        self.inject(path, Fault("trickle", delay_s=piece_delay_s), times)

    def drop(self, path: str, times: int = 1) -> None:
        """Close the connection without answering."""
        self.inject(path, Fault("drop"), times)

    @property
    def requests(self) -> list[RequestRecord]:
        with self.lock:
            return list(self._log)

    def count(self, path: str) -> int:
        """How many requests ``path`` received."""
        return sum(1 for r in self.requests if r.path == path)

    # --- serving -----------------------------------------------------------
    def _content(self, path: str) -> tuple[bytes, str] | None:
        with self.lock:
            if path in self._files:
                return self._files[path]
            if path in self._streams:
                return self._streams[path].playlist().encode(), PLAYLIST_TYPE
            for stream in self._streams.values():
                for _seq, name, data, *_rest in stream.segments:
                    if path == f"{stream.dir}/{name}":
                        return data, "video/mp2t"
            parts = path.strip("/").split("/")
            if len(parts) == 2 and parts[1] == "latest.txt" and parts[0] in self._latest:
                return f"{self._latest[parts[0]]}\n".encode(), "text/plain"
            if len(parts) == 4 and parts[1] == "hls" and parts[2].isdigit():
                folder = self._nodes.get(parts[0], {}).get(int(parts[2]))
                if folder is None:
                    return None
                if parts[3] == "live.m3u8":
                    if not folder.segments:
                        return None  # ffmpeg writes it with the first segment
                    return _orcasound_playlist(folder).encode(), PLAYLIST_TYPE
                for name, body, _ in folder.segments:
                    if name == parts[3] and body is not None:
                        return body, "video/mp2t"
            return None

    def handle(self, h: _Handler) -> None:
        path = urlsplit(h.path).path
        with self.lock:
            queue = self._faults.get(path)
            fault = queue.pop(0) if queue else None
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay_s)
        if fault is not None and fault.kind == "drop":
            self._record(h, path, 0)
            h.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            body = b"injected fault\n" if fault.body is None else fault.body
            self._send(h, path, fault.status, body, "text/plain", fault.headers)
            return
        content = self._content(path)
        if content is None:
            self._send(h, path, 404, b"not found\n", "text/plain")
            return
        body, ctype = content
        if fault is not None and fault.kind == "half":
            self._send(h, path, 200, body[: len(body) // 2], ctype)
            return
        if fault is not None and fault.kind == "trickle":
            self._trickle(h, path, body, ctype, fault.delay_s)
            return
        if fault is not None and fault.kind in ("truncate", "nolength"):
            self._record(h, path, 200)
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            if fault.kind == "truncate":
                h.send_header("Content-Length", str(len(body)))
                body = body[: len(body) // 2]
            else:
                h.send_header("Connection", "close")
            for k, v in fault.headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body)
            h.wfile.flush()
            h.close_connection = True
            return
        self._send(h, path, 200, body, ctype)

    def _trickle(self, h: _Handler, path: str, body: bytes, ctype: str, delay_s: float
                 ) -> None:
        self._record(h, path, 200)
        h.send_response(200)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            for i in range(0, len(body), 1024):
                h.wfile.write(body[i:i + 1024])
                h.wfile.flush()
                time.sleep(delay_s)
        except OSError:
            pass  # the client gave up: that is the point
        h.close_connection = True

    def _send(self, h: _Handler, path: str, status: int, body: bytes, ctype: str,
              headers: dict[str, str] | None = None) -> None:
        self._record(h, path, status)
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)

    def _record(self, h: _Handler, path: str, status: int) -> None:
        with self.lock:
            self._log.append(RequestRecord(path, status, time.monotonic(),
                                           int(h.client_address[1])))
