"""A live Orcasound-style HLS stream on 127.0.0.1, made from a local recording.

ffmpeg cuts the recording (looped to the length asked for) into ~10 s
MPEG-TS/AAC segments exactly as an Orcasound node does (48 kHz stereo,
``live%03d.ts``), and the server publishes them one by one at real-time pace
under ``/<node>/latest.txt`` and ``/<node>/hls/<ts>/live.m3u8``. Used by
``listener demo`` and the benchmarks; loopback only.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from listener.audio.decode import find_ffmpeg
from listener.errors import DecodeError

log = logging.getLogger(__name__)


def make_segments(recording: Path, out_dir: Path, duration_s: float, segment_s: float = 10.0,
                  ffmpeg_exe: str | None = None) -> list[tuple[str, float]]:
    """Encode ``duration_s`` of the (looped) recording into ``live%03d.ts`` files.

    Returns ``[(name, duration_s)]`` read back from ffmpeg's own playlist.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    exe = ffmpeg_exe or find_ffmpeg()
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
           "-stream_loop", "-1", "-i", str(recording), "-t", f"{duration_s:.3f}",
           "-ar", "48000", "-ac", "2", "-c:a", "aac", "-b:a", "128k",
           "-f", "segment", "-segment_time", f"{segment_s:g}", "-segment_format", "mpegts",
           "-segment_list", str(out_dir / "full.m3u8"), "-segment_list_type", "m3u8",
           str(out_dir / "live%03d.ts")]
    res = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    if res.returncode != 0:
        raise DecodeError(str(recording), "ffmpeg could not make HLS segments",
                          res.stderr.decode("utf-8", "replace")[-2000:])
    segments: list[tuple[str, float]] = []
    duration = None
    for line in (out_dir / "full.m3u8").read_text().splitlines():
        if line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line and not line.startswith("#") and duration is not None:
            segments.append((line.strip(), duration))
            duration = None
    return segments


class LiveNode:
    """Publishes segments of one node folder over HTTP, like the Orcasound bucket."""

    def __init__(self, node: str, folder_ts: int, seg_dir: Path,
                 segments: list[tuple[str, float]], host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.node = node
        self.host = host
        self.folder_ts = folder_ts
        self.seg_dir = seg_dir
        self.segments = segments
        self.published = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="demo-hls")
        self._pacer: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self, initially: int, pace: float = 1.0) -> None:
        """Serve with ``initially`` segments listed, then one more per segment duration."""
        self.published = min(initially, len(self.segments))
        self._thread.start()
        self._pacer = threading.Thread(target=self._pace, args=(pace,), daemon=True,
                                       name="demo-pacer")
        self._pacer.start()

    def _pace(self, pace: float) -> None:
        while not self._stop.is_set() and self.published < len(self.segments):
            if self._stop.wait(self.segments[self.published][1] / pace):
                return
            with self._lock:
                self.published += 1

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def playlist(self) -> str:
        with self._lock:
            listed = self.segments[: self.published]
        target = max((round(d) for _, d in self.segments), default=10)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-MEDIA-SEQUENCE:0",
                 "#EXT-X-ALLOW-CACHE:YES", f"#EXT-X-TARGETDURATION:{target}"]
        for name, duration in listed:
            lines += [f"#EXTINF:{duration:.6f},", name]
        return "\n".join(lines) + "\n"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("demo-hls: %s", fmt % args)

            def do_GET(self) -> None:
                prefix = f"/{node.node}/"
                folder = f"{prefix}hls/{node.folder_ts}/"
                body: bytes | None = None
                if self.path == f"{prefix}latest.txt":
                    body = f"{node.folder_ts}\n".encode()
                elif self.path == f"{folder}live.m3u8":
                    body = node.playlist().encode()
                elif self.path.startswith(folder) and self.path.endswith(".ts"):
                    name = self.path[len(folder):]
                    with node._lock:
                        listed = {n for n, _ in node.segments[: node.published]}
                    if name in listed:
                        body = (node.seg_dir / name).read_bytes()
                if body is None:
                    self.send_error(HTTPStatus.NOT_FOUND)
                    return
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


def folder_time_for(segments: list[tuple[str, float]], initially: int) -> int:
    """A folder time that makes the ``initially`` listed segments end about now."""
    listed = sum(d for _, d in segments[:initially])
    return int(time.time() - listed)
