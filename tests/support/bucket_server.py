"""A loopback emulator of Orcasound's public S3 bucket, for tests.

Serves, on ``127.0.0.1`` (a free port) from a :class:`ThreadingHTTPServer`
thread, path-style: ``GET /<bucket>?list-type=2&prefix=..&delimiter=/``
(ListObjectsV2 XML, ``page_size`` keys or prefixes per page, opaque
continuation tokens) and ``GET /<bucket>/<key>`` (object bytes or 404).

Register streams with :meth:`BucketServer.add_folder`; segment bodies may be
any bytes, or paths of real MPEG-TS files (read at registration)::

    with BucketServer(page_size=2) as bucket:
        bucket.add_folder("rpi_orcasound_lab", 1594150218,
                          [("live000.ts", 9.792, Path(".../live000.ts")), ...])
        base_url = bucket.base_url  # http://127.0.0.1:PORT/audio-orcasound-net
"""

from __future__ import annotations

import base64
import math
import os
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def ffmpeg_playlist(segments: Iterable[tuple[str, float]]) -> bytes:
    """A live.m3u8 as ffmpeg's segment muxer writes it (no ENDLIST while live)."""
    items = list(segments)
    target = math.ceil(max((d for _, d in items), default=10.0))
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-MEDIA-SEQUENCE:0",
             "#EXT-X-ALLOW-CACHE:YES", f"#EXT-X-TARGETDURATION:{target}"]
    for name, duration in items:
        lines += [f"#EXTINF:{duration:.6f},", name]
    return ("\n".join(lines) + "\n").encode()


class BucketServer:
    """An anonymous-read S3 bucket on loopback.

    Args:
        bucket: the bucket name (first path component of :attr:`base_url`).
        page_size: keys plus common prefixes per ListObjectsV2 page.
    """

    def __init__(self, bucket: str = "audio-orcasound-net", page_size: int = 1000) -> None:
        self.bucket = bucket
        self.page_size = page_size
        self.objects: dict[str, bytes] = {}
        #: Request targets as received (path and query), in order.
        self.requests: list[str] = []
        #: Replaces every listing page's body when set (malformed/unsafe XML tests).
        self.listing_override: bytes | None = None
        #: key -> HTTP statuses to answer before serving it (e.g. [503, 503]).
        self.failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        # A short poll interval keeps shutdown (and each test's teardown) fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        name="bucket-server", daemon=True)

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """Path-style bucket URL, as in ``StreamConfig.base_url``."""
        return f"http://127.0.0.1:{self.port}/{self.bucket}"

    def start(self) -> BucketServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> BucketServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def put(self, key: str, body: bytes) -> None:
        """Store one object."""
        with self._lock:
            self.objects[key] = body

    def add_folder(self, node: str, ts: int,
                   segments: list[tuple[str, float, bytes | os.PathLike[str]]],
                   missing: Iterable[str] = (), playlist: bool = True) -> str:
        """Register ``<node>/hls/<ts>/``: its segments and a live.m3u8 listing them.

        Args:
            segments: ``(name, EXTINF seconds, bytes or path of a file)``, in
                playlist order; leave a name out to make the playlist skip it.
            missing: names listed in the playlist but answered with 404
                (``"live.m3u8"`` makes the playlist itself missing).
            playlist: False stores no playlist at all.

        Returns:
            the folder's URL (ends with ``/``).
        """
        folder = f"{node}/hls/{ts}/"
        gone = set(missing)
        for name, _, body in segments:
            if name not in gone:
                data = body if isinstance(body, bytes) else Path(body).read_bytes()
                self.put(folder + name, data)
        if playlist and "live.m3u8" not in gone:
            self.put(folder + "live.m3u8", ffmpeg_playlist((n, d) for n, d, _ in segments))
        return f"{self.base_url}/{folder}"

    def list_page(self, prefix: str, delimiter: str, token: str | None) -> bytes:
        """One ListObjectsV2 page (what S3 answers), as XML bytes."""
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix))
        entries: list[tuple[str, bool]] = []  # (key or common prefix, is_prefix)
        for key in keys:
            rest = key[len(prefix):]
            if delimiter and delimiter in rest:
                common = prefix + rest[:rest.index(delimiter) + len(delimiter)]
                if not entries or entries[-1][0] != common:
                    entries.append((common, True))
            else:
                entries.append((key, False))
        after = base64.b64decode(token, validate=True).decode() if token else ""
        todo = [e for e in entries if e[0] > after]
        page, more = todo[:self.page_size], len(todo) > self.page_size
        parts = [f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{S3_NS}">',
                 f"<Name>{escape(self.bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
                 f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{self.page_size}</MaxKeys>",
                 f"<Delimiter>{escape(delimiter)}</Delimiter>",
                 f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"]
        if token:
            parts.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
        if more:
            # base64 carries '+', '/' and '=' like real tokens, so URL encoding is exercised.
            nxt = base64.b64encode(page[-1][0].encode()).decode()
            parts.append(f"<NextContinuationToken>{escape(nxt)}</NextContinuationToken>")
        for name, is_prefix in page:
            if is_prefix:
                parts.append(f"<CommonPrefixes><Prefix>{escape(name)}</Prefix></CommonPrefixes>")
            else:
                size = len(self.objects.get(name, b""))
                parts.append(f"<Contents><Key>{escape(name)}</Key><Size>{size}</Size></Contents>")
        parts.append("</ListBucketResult>")
        return "".join(parts).encode()


def _handler_for(server: BucketServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, code: str) -> None:
            body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{code}</Message></Error>").encode()
            self._send(status, body, "application/xml")

        def do_GET(self) -> None:
            with server._lock:
                server.requests.append(self.path)
            parts = urlsplit(self.path)
            path = unquote(parts.path).lstrip("/")
            bucket, _, key = path.partition("/")
            if bucket != server.bucket:
                return self._error(404, "NoSuchBucket")
            with server._lock:
                queued = server.failures.get(key)
                status = queued.pop(0) if queued else None
            if status is not None:
                return self._error(status, "InternalError" if status >= 500 else "Injected")
            if not key:
                query = parse_qs(parts.query)
                if query.get("list-type") != ["2"]:
                    return self._error(400, "InvalidArgument")
                try:
                    body = server.listing_override or server.list_page(
                        query.get("prefix", [""])[0], query.get("delimiter", [""])[0],
                        query.get("continuation-token", [None])[0])
                except ValueError:  # a token mangled on the way (e.g. '+' sent unencoded)
                    return self._error(400, "InvalidArgument")
                return self._send(200, body, "application/xml")
            with server._lock:
                data = server.objects.get(key)
            if data is None:
                return self._error(404, "NoSuchKey")
            ctype = ("application/vnd.apple.mpegurl" if key.endswith(".m3u8")
                     else "video/MP2T" if key.endswith(".ts") else "application/octet-stream")
            return self._send(200, data, ctype)

    return Handler
