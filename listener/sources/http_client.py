"""HTTP fetches of playlists and segments: retries, size caps, circuit breaker.

:class:`HttpClient` wraps one :class:`requests.Session` so that connections to
the bucket are reused. :meth:`HttpClient.get` blocks; :meth:`HttpClient.aget`
runs it in a worker thread so the event loop never waits on the network.

Errors (see ``listener.errors``): every failure surfaces as
:class:`~listener.errors.FetchError` (the message names the URL and the
reason, the requests/urllib3 error is chained with ``from``), and a refused
request to a host whose breaker is open as its subclass
:class:`~listener.errors.CircuitOpenError`.

What is retried (``FetchConfig.retries`` times, jittered exponential backoff
from ``backoff_initial_s`` up to ``backoff_max_s``): connection errors,
timeouts, truncated bodies, HTTP 5xx and 429 (``Retry-After`` is honoured up
to ``backoff_max_s``), and 404 only when the caller passes ``retry_404=True``
(S3 may list a segment in the playlist a moment before the object is
readable). Other 4xx, oversize bodies, bodies with a Content-Encoding (an
object stored gzipped) and bad URLs fail at once.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Literal, Protocol

import requests
import urllib3

from listener.config import FetchConfig
from listener.errors import CircuitOpenError, FetchError
from listener.numerals import ascii_int
from listener.retry import Backoff, parse_retry_after
from listener.sources.breaker import CircuitBreaker
from listener.sources.deadline import DeadlineWatch, body_chunks
from listener.sources.fetch_reason import brief
from listener.sources.urls import check_url, host_key

log = logging.getLogger(__name__)

FetchKind = Literal["playlist", "segment"]

# Large enough to keep per-read overhead low, small enough that the "cap plus
# one chunk" bound on buffered bytes stays tight.
DEFAULT_CHUNK_BYTES = 16 * 1024


@dataclass(frozen=True)
class FetchResult:
    """The outcome of one :meth:`HttpClient.get` call, passed to the observer.

    ``attempts`` counts HTTP attempts (1 = no retry); ``nbytes`` is the body
    size on success, 0 on failure; ``elapsed_s`` includes backoff sleeps.
    """

    url: str
    kind: str
    ok: bool
    status: int | None
    nbytes: int
    elapsed_s: float
    attempts: int
    error: str | None = None
    circuit_open: bool = False


class FetchObserver(Protocol):
    """Anything callable with a :class:`FetchResult` (e.g. a metrics hook)."""

    def __call__(self, result: FetchResult, /) -> None: ...


class OversizeError(FetchError):
    """The body is larger than the cap: refused at once, never retried."""


class _AttemptFailed(Exception):
    """One HTTP attempt failed; says whether to retry and whether the host is to blame."""

    def __init__(self, reason: str, *, retryable: bool, host_fault: bool,
                 status: int | None = None, retry_after_s: float | None = None,
                 cause: BaseException | None = None, oversize: bool = False) -> None:
        super().__init__(reason)
        self.oversize = oversize
        self.reason = reason
        self.retryable = retryable
        self.host_fault = host_fault
        self.status = status
        self.retry_after_s = retry_after_s
        self.cause = cause


class HttpClient:
    """Blocking HTTP GET with retries, a byte cap and a per-host circuit breaker.

    Args:
        config: timeouts, retries, backoff, size caps and breaker settings.
        on_result: called once per :meth:`get` with a :class:`FetchResult`
            (success or failure); exceptions it raises are logged and ignored.
        stop_event: when set, backoff sleeps end at once and the call fails;
            :meth:`stop` sets it. Shared with the daemon's shutdown if given.
        session: a ready :class:`requests.Session` (tests); one is built if None.
        chunk_bytes: read size when streaming bodies.
        rng: random source for backoff jitter (tests may seed it).
    """

    def __init__(self, config: FetchConfig, *, on_result: FetchObserver | None = None,
                 stop_event: threading.Event | None = None,
                 session: requests.Session | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 rng: random.Random | None = None) -> None:
        self._config = config
        self._on_result = on_result
        self._stop = stop_event or threading.Event()
        self._chunk_bytes = chunk_bytes
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s,
                                rng or random.Random())
        self._breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_s)
        self._breaker_announced: set[str] = set()
        self._last_failure: dict[str, str] = {}  # host -> the last failed attempt's reason
        self._deadlines = DeadlineWatch()
        self._session = session or requests.Session()
        self._session.max_redirects = 5
        self._session.headers.update({
            "User-Agent": config.user_agent,
            # The cap then counts bytes on the wire, and audio does not
            # compress anyway; it also avoids decompression bombs.
            "Accept-Encoding": "identity",
        })

    @property
    def config(self) -> FetchConfig:
        """The fetch settings this client was built with."""
        return self._config

    @property
    def breaker(self) -> CircuitBreaker:
        """The per-host circuit breaker (read-only use: ``is_open(host)``)."""
        return self._breaker

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called or the stop event was set."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Make pending and future backoff sleeps end at once (shutdown)."""
        self._stop.set()

    def close(self) -> None:
        """Stop retries and close pooled connections."""
        self.stop()
        self._deadlines.close()
        self._session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def max_bytes_for(self, kind: str) -> int:
        """The configured cap for a kind: playlists are small, segments larger."""
        if kind == "segment":
            return self._config.max_segment_bytes
        return self._config.max_playlist_bytes

    async def aget(self, url: str, kind: FetchKind, max_bytes: int | None = None, *,
                   retry_404: bool = False, retries: int | None = None) -> bytes:
        """:meth:`get` in a worker thread, so the event loop never blocks."""
        return await asyncio.to_thread(self.get, url, kind, max_bytes,
                                       retry_404=retry_404, retries=retries)

    def get(self, url: str, kind: FetchKind, max_bytes: int | None = None, *,
            retry_404: bool = False, retries: int | None = None) -> bytes:
        """Fetch ``url`` and return its body.

        Args:
            url: an http:// or https:// URL.
            kind: ``"playlist"`` or ``"segment"``; labels the observer result
                and picks the default cap.
            max_bytes: refuse bodies larger than this (default: the config cap
                for ``kind``). At most this plus one chunk is ever buffered.
            retry_404: treat 404 as transient (a listed segment not yet readable).
            retries: override ``FetchConfig.retries`` for this call.

        Raises:
            CircuitOpenError: the host's breaker is open.
            FetchError: every other failure, after the retries.
        """
        cap = self.max_bytes_for(kind) if max_bytes is None else max_bytes
        tries = 1 + (self._config.retries if retries is None else max(0, retries))
        started = time.monotonic()
        attempts = 0
        try:
            check_url(url)
            host = host_key(url)
            while True:
                attempts += 1
                self._check_breaker(url, host)
                try:
                    body, status = self._attempt(url, host, cap, retry_404)
                except _AttemptFailed as fail:
                    self._give_up_or_wait(url, fail, attempts, tries)
                    continue
                self._report(FetchResult(url, kind, True, status, len(body),
                                         time.monotonic() - started, attempts))
                return body
        except FetchError as err:
            self._report(FetchResult(url, kind, False, err.status, 0,
                                     time.monotonic() - started, attempts, err.reason,
                                     isinstance(err, CircuitOpenError)))
            raise

    def _check_breaker(self, url: str, host: str) -> None:
        wait_s = self._breaker.allow(host)
        if wait_s is not None:
            last = self._last_failure.get(host)
            raise CircuitOpenError(url, f"circuit breaker open for {host} after "
                                        f"{self._config.breaker_failures} consecutive failures"
                                        f"{f' (last: {last})' if last else ''}; "
                                        f"next try in {wait_s:.1f} s")

    def _give_up_or_wait(self, url: str, fail: _AttemptFailed, attempts: int,
                         tries: int) -> None:
        """Raise FetchError if this failure is final, else sleep the backoff."""
        if not fail.retryable or attempts >= tries:
            reason = fail.reason if attempts == 1 else f"{fail.reason} (after {attempts} attempts)"
            error = OversizeError if fail.oversize else FetchError
            raise error(url, reason, status=fail.status) from fail.cause
        delay = self._backoff.delay(attempts, fail.retry_after_s)
        log.info("%s: %s; retry %d of %d in %.2f s", url, fail.reason, attempts, tries - 1, delay)
        if self._stop.wait(delay):
            raise FetchError(url, f"stopped while waiting to retry ({fail.reason})",
                             status=fail.status) from fail.cause

    def _attempt(self, url: str, host: str, cap: int, retry_404: bool) -> tuple[bytes, int]:
        """One GET; records the verdict in the breaker; raises _AttemptFailed."""
        verdict: bool | None = None  # True: host is fine, False: host failed
        try:
            body, status = self._request(url, cap, retry_404)
            verdict = True
            return body, status
        except _AttemptFailed as fail:
            verdict = not fail.host_fault
            if fail.host_fault:  # what the breaker's refusals will name as the cause
                self._last_failure[host] = fail.reason
            raise
        finally:
            if verdict is None:
                # An unexpected exception: free a half-open trial slot so the
                # host is not refused forever.
                self._breaker.release(host)
            elif verdict:
                self._breaker.record_success(host)
                if host in self._breaker_announced:
                    self._breaker_announced.discard(host)
                    log.info("%s: circuit breaker closed, the host answers again", host)
            elif self._breaker.record_failure(host):
                # Once per outage at WARNING; each failed half-open trial after
                # that at DEBUG, so a host down for hours is not a log flood.
                level = logging.DEBUG if host in self._breaker_announced else logging.WARNING
                self._breaker_announced.add(host)
                log.log(level, "%s: circuit breaker opened after %d consecutive failures; "
                        "pausing requests for %.1f s", host, self._config.breaker_failures,
                        self._config.breaker_reset_s)

    def _request(self, url: str, cap: int, retry_404: bool) -> tuple[bytes, int]:
        timeout = (self._config.connect_timeout_s, self._config.read_timeout_s)
        started = time.monotonic()
        try:
            resp = self._session.get(url, stream=True, timeout=timeout)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
                requests.exceptions.MissingSchema, requests.exceptions.TooManyRedirects) as err:
            # Bad URL or a redirect to one (e.g. file://): retrying cannot help.
            raise _AttemptFailed(f"refused: {brief(err)}", retryable=False, host_fault=False,
                                 cause=err) from err
        except requests.exceptions.Timeout as err:
            raise _AttemptFailed(f"timed out: {brief(err)}", retryable=True, host_fault=True,
                                 cause=err) from err
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                http.client.HTTPException, OSError) as err:
            raise _AttemptFailed(f"connection failed: {brief(err)}", retryable=True,
                                 host_fault=True, cause=err) from err
        with resp:
            status = resp.status_code
            if 200 <= status < 300:
                return self._read_capped(resp, cap, started), status
            reason = f"HTTP {status} {resp.reason or ''}".rstrip()
            if status == 429 or status >= 500:
                raise _AttemptFailed(reason, retryable=True, host_fault=True, status=status,
                                     retry_after_s=parse_retry_after(
                                         resp.headers.get("Retry-After")))
            raise _AttemptFailed(reason, retryable=status == 404 and retry_404,
                                 host_fault=False, status=status)

    def _read_capped(self, resp: requests.Response, cap: int, started: float) -> bytes:
        """Stream the body into memory, refusing more than ``cap`` bytes.

        The read timeout bounds each wait for data, not the whole body, so a
        body trickled a few bytes at a time must be cut by ``max_fetch_s``
        itself: a timer shuts the socket down at the deadline, which ends a
        read blocked mid-chunk at once (checking the clock between chunks
        would wait for a whole chunk, minutes at a trickle).
        """
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # An object stored compressed (S3) is served so whatever
            # Accept-Encoding says; decoding it would lift the byte cap.
            raise _AttemptFailed(f"body has Content-Encoding {encoding[:40]!r}; only "
                                 "uncompressed bodies are read", retryable=False,
                                 host_fault=False, status=resp.status_code)
        declared = self._declared_length(resp, cap)
        watchdog = self._deadlines.watch(
            resp, started + self._config.max_fetch_s - time.monotonic())
        body = bytearray()
        try:
            for chunk in body_chunks(resp, self._chunk_bytes):
                body += chunk
                if watchdog.expired:
                    break
                if len(body) > cap:
                    raise _AttemptFailed(f"body is larger than {cap} bytes", retryable=False,
                                         host_fault=False, status=resp.status_code,
                                         oversize=True)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                http.client.HTTPException, OSError, ValueError) as err:
            if watchdog.expired:
                self._too_slow(resp.url, len(body), resp.status_code, started)
            if isinstance(err, urllib3.exceptions.ProtocolError | http.client.IncompleteRead
                          | requests.exceptions.ChunkedEncodingError):
                # urllib3 enforces Content-Length: a connection closed early lands here.
                raise _AttemptFailed(f"truncated body: {brief(err)}", retryable=True,
                                     host_fault=True, status=resp.status_code,
                                     cause=err) from err
            raise _AttemptFailed(f"reading the body failed: {brief(err)}", retryable=True,
                                 host_fault=True, status=resp.status_code, cause=err) from err
        finally:
            watchdog.cancel()
        complete = declared is not None and len(body) == declared
        if watchdog.expired and not complete:
            # The shutdown may look like the end of a body without a length.
            self._too_slow(resp.url, len(body), resp.status_code, started)
        if declared is not None and len(body) != declared:
            raise _AttemptFailed(f"truncated body: got {len(body)} of {declared} bytes",
                                 retryable=True, host_fault=True, status=resp.status_code)
        return bytes(body)

    @staticmethod
    def _declared_length(resp: requests.Response, cap: int) -> int | None:
        """Content-Length, refused at once when above ``cap``."""
        header = resp.headers.get("Content-Length")
        if header is None:
            return None
        declared = ascii_int(header.strip())
        if declared is None:  # RFC 9110: 1*DIGIT; int() would take "-5", "1_0" or 4 300 digits
            raise _AttemptFailed(f"bad Content-Length {header[:40]!r}", retryable=False,
                                 host_fault=False, status=resp.status_code)
        if declared > cap:
            raise _AttemptFailed(f"body is larger than {cap} bytes (Content-Length "
                                 f"{declared})", retryable=False, host_fault=False,
                                 status=resp.status_code, oversize=True)
        return declared

    def _too_slow(self, url: str, nbytes: int, status: int, started: float) -> None:
        limit = self._config.max_fetch_s
        elapsed = max(time.monotonic() - started, 1e-3)
        # The rate of the bytes actually received, over the time actually spent.
        log.warning("%s: still downloading after the %.1f s per-fetch deadline (%d bytes in "
                    "%.1f s, %.2f kB/s); abandoning this attempt", url, limit, nbytes, elapsed,
                    nbytes / 1000 / elapsed)
        raise _AttemptFailed(f"too slow: not complete within max_fetch_s={limit:g} s "
                             f"({nbytes} bytes received)", retryable=True, host_fault=True,
                             status=status)

    def report_invalid(self, url: str, kind: FetchKind, reason: str) -> None:
        """Tell the observer a fetched body was unusable (e.g. a playlist that does
        not parse), so it is counted like a failed fetch of that kind."""
        self._report(FetchResult(url, kind, False, None, 0, 0.0, 0, reason))

    def _report(self, result: FetchResult) -> None:
        if self._on_result is None:
            return
        try:
            self._on_result(result)
        except Exception:  # a broken metrics hook must not break fetching
            log.exception("fetch observer failed for %s", result.url)

