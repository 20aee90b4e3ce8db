"""POST each event to an HTTP endpoint, through a durable on-disk outbox.

``emit`` only writes the event to ``<outbox>/<counter>-<event id>.json``
(atomically: temporary file, fsync, rename, fsync of the folder) and returns,
so a slow or dead endpoint never holds up detection. A background task
POSTs the outbox in counter order, one at a time, and deletes each file once
the endpoint answered 2xx. Delivery is at-least-once: the ``Idempotency-Key``
header (the event id, stable across restarts) lets the receiver drop repeats.

* connection errors, timeouts, 408, 429 and 5xx: retried with jittered
  exponential backoff (``backoff_initial_s`` .. ``backoff_max_s``; a 429's
  ``Retry-After`` in seconds is honoured up to the maximum). Later events
  wait behind the head, which keeps the order.
* other 3xx/4xx: permanent; the file moves to ``<outbox>/dead/`` and the
  failure is logged and counted. Redirects are not followed (a POST that
  becomes a GET would lose the body silently).
* files left at shutdown or after a crash are delivered on the next start.
  Each is read back (at most 4 MB) and must be the JSON of the event its
  name carries; a corrupted one moves to ``dead/`` with an ERROR, never
  POSTed, and so does a symbolic link.

One outbox belongs to one sink of one daemon; two processes sharing it would
deliver twice. The bearer token comes from the environment (``token_env``)
or a file (``token_file``), read once when the sink is built.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

from listener.atomic import atomic_write
from listener.config import WebhookSinkConfig
from listener.errors import SinkError
from listener.events.records import Event
from listener.events.sinks.jsonl import dumps_event
from listener.retry import Backoff, parse_retry_after
from listener.tasks import cancel_and_wait, in_daemon_thread

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{12})-([0-9A-Za-z-]{1,64})\.json$")
# Past this the outbox is renumbered from 0 at start, so names stay 12 digits
# (an entry named 999999999999-... would otherwise make the next one 13).
_RENUMBER_AT = 10**11
# An event is a few kB (its clip's windows); anything far larger is not one.
_MAX_ENTRY_BYTES = 4 * 1024 * 1024
_USER_AGENT = "listener/0.1 (+https://github.com/orcasound)"
# The most of an error answer's body read (for the log): the rest is never read.
_MAX_DETAIL_BYTES = 200
# Past timeout_s a POST is given up on from the event loop (a trickling endpoint).
_GRACE_S = 1.0


def read_token(cfg: WebhookSinkConfig) -> str | None:
    """The bearer token from ``token_env`` or else ``token_file``; None if neither is set.

    Raises :class:`SinkError` when one is configured but empty or unreadable
    (the message names the variable or file, never the token).
    """
    if cfg.token_env is None and cfg.token_file is None:
        return None
    value = os.environ.get(cfg.token_env, "").strip() if cfg.token_env else ""
    if not value and cfg.token_file is not None:
        try:
            value = Path(cfg.token_file).read_text(encoding="utf-8").strip()
        except OSError as err:
            raise SinkError(f"webhook: cannot read token_file {cfg.token_file}: "
                            f"{err.strerror or err}") from err
    if not value:
        where = " / ".join(str(w) for w in (cfg.token_env and f"${cfg.token_env}",
                                            cfg.token_file) if w)
        raise SinkError(f"webhook: no token in {where} (set it or remove the setting)")
    if any(c in value for c in "\r\n\0"):
        raise SinkError("webhook: the token contains a line break or NUL")
    return value


def _read_some(r: requests.Response, limit: int, deadline: float) -> str:
    """Up to ``limit`` bytes of a streamed answer's body, until ``deadline`` (monotonic)."""
    got = bytearray()
    try:
        while len(got) < limit and time.monotonic() < deadline:
            chunk = r.raw.read1(limit - len(got))
            if not chunk:
                break
            got += chunk
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError):
        pass  # only the detail of an error answer is lost
    return got.decode("utf-8", "replace")


def _read_entry(path: Path, event_id: str) -> bytes:
    """An outbox file's bytes, checked to be the event its name says.

    Raises ``OSError`` for a symbolic link (swapped in after the scan) and
    ``ValueError`` for a file that is not that event's JSON (corrupted on disk,
    or put there by hand): neither is ever POSTed.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        body = fh.read(_MAX_ENTRY_BYTES + 1)
    if len(body) > _MAX_ENTRY_BYTES:
        raise ValueError(f"larger than {_MAX_ENTRY_BYTES} bytes")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("id") != event_id:
        raise ValueError(f"not the event {event_id} its name says")
    return body


class WebhookSink:
    """Durable, ordered, at-least-once delivery of events to ``cfg.url``.

    Args:
        cfg: the ``outputs.webhook`` section.
        outbox_dir: where pending events wait (``dead/`` below it for rejects).
        on_depth: called with the number of pending events whenever it changes.
        on_delivered / on_failure: called per delivered event / per failed
            attempt (each retry and each dead letter counts).
        uris: ``audio_base_uri``/``image_base_uri``/``audio_format`` for the body.
    """

    reports_own_deliveries = True
    durable = True

    def __init__(self, cfg: WebhookSinkConfig, outbox_dir: Path,
                 on_depth: Callable[[int], None] | None = None, *,
                 on_delivered: Callable[[], None] | None = None,
                 on_failure: Callable[[], None] | None = None, **uris: str) -> None:
        self.name = "webhook"
        self.cfg = cfg
        self.outbox = Path(outbox_dir)
        self.dead_dir = self.outbox / "dead"
        self._token = read_token(cfg)
        self._uris = uris
        self._on_depth = on_depth
        self._on_delivered = on_delivered
        self._on_failure = on_failure
        self._pending: list[Path] = []
        self._ids: set[str] = set()
        self._counter = 0
        self._lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._empty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: requests.Session | None = None
        self._backoff_policy = Backoff(cfg.backoff_initial_s, cfg.backoff_max_s)

    @property
    def depth(self) -> int:
        """Events waiting in the outbox."""
        return len(self._pending)

    def _depth_changed(self) -> None:
        if self._pending:
            self._empty.clear()
        else:
            self._empty.set()
        if self._on_depth is not None:
            self._on_depth(len(self._pending))

    def _scan(self) -> list[Path]:
        self.outbox.mkdir(parents=True, exist_ok=True)
        found = []
        for p in self.outbox.iterdir():
            if p.is_symlink():
                # Never POST a link's target: it could be any file on the host.
                logger.error("webhook outbox: %s is a symbolic link; it is never delivered "
                             "(remove it)", p)
            elif p.name.startswith(".") and p.name.endswith(".tmp"):
                p.unlink(missing_ok=True)  # torn write from a crash: never acknowledged
            elif p.is_file():
                if _NAME.match(p.name):
                    found.append(p)
                else:
                    logger.warning("webhook outbox: ignoring unexpected file %s", p)
        found.sort()
        if found and int(found[-1].name[:12]) >= _RENUMBER_AT:
            found = self._renumber(found)
        return found

    def _renumber(self, found: list[Path]) -> list[Path]:
        """Rename pending files to 0, 1, 2... in their order (names stay 12 digits)."""
        logger.warning("webhook outbox: counter at %s, near its 12-digit limit; renumbering "
                       "%d pending file(s) from 0", found[-1].name[:12], len(found))
        out = []
        for i, p in enumerate(found):
            target = p.with_name(f"{i:012d}{p.name[12:]}")
            if target != p:
                os.replace(p, target)
            out.append(target)
        return out

    async def start(self) -> None:
        """Load the outbox left by a previous run and start delivering it."""
        if self._task is not None and not self._task.done():
            return
        try:
            pending = await asyncio.to_thread(self._scan)
        except OSError as err:
            raise SinkError(f"webhook: cannot use outbox {self.outbox}: {err}") from err
        self._pending = pending
        self._ids = {m[2] for p in pending if (m := _NAME.match(p.name))}
        self._counter = max((int(p.name[:12]) for p in pending), default=-1) + 1
        if pending:
            logger.info("webhook: %d event(s) left in %s from an earlier run; delivering",
                        len(pending), self.outbox)
        self._session = requests.Session()
        self._depth_changed()
        self._task = asyncio.create_task(self._run(), name="webhook-delivery")

    async def emit(self, event: Event) -> None:
        """Put the event in the outbox (durably) and return; raises :class:`SinkError`."""
        if self._task is None:
            await self.start()
        try:
            body = dumps_event(event, **self._uris)
        except ValueError as err:
            raise SinkError(f"webhook: event {event.id} is not serialisable: {err}") from err
        async with self._lock:
            if event.id in self._ids:
                logger.debug("webhook: event %s already in the outbox", event.id)
                return
            path = self.outbox / f"{self._counter:012d}-{event.id}.json"
            self._counter += 1
            try:
                await asyncio.to_thread(atomic_write, path, body)
            except OSError as err:
                raise SinkError(f"webhook: cannot write outbox file {path}: {err}") from err
            self._pending.append(path)
            self._ids.add(event.id)
            self._depth_changed()
            self._wakeup.set()

    def _post(self, session: requests.Session, body: bytes, event_id: str
              ) -> tuple[str, str, float | None]:
        """One POST (in a thread): ``(outcome, detail, retry_after)``; outcome ok|retry|dead."""
        headers = {"Content-Type": "application/json", "Idempotency-Key": event_id,
                   "User-Agent": _USER_AGENT}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        # requests' timeout bounds each socket read, not the POST: the body is
        # streamed and read only for an error's detail, a few bytes, by a deadline.
        deadline = time.monotonic() + self.cfg.timeout_s
        try:
            with session.post(self.cfg.url, data=body, headers=headers, stream=True,
                              timeout=self.cfg.timeout_s, allow_redirects=False) as r:
                status = r.status_code
                retry_after = r.headers.get("Retry-After", "")
                text = "" if 200 <= status < 300 else _read_some(r, _MAX_DETAIL_BYTES, deadline)
        except requests.RequestException as err:
            return "retry", f"{type(err).__name__}: {err}", None
        if 200 <= status < 300:
            return "ok", str(status), None
        detail = f"HTTP {status} {text!r}"
        if status in (408, 429) or status >= 500:
            return "retry", detail, parse_retry_after(retry_after)
        return "dead", detail, None

    def _backoff(self, attempt: int, hint: float | None) -> float:
        return self._backoff_policy.delay(attempt, hint)

    def _finish(self, path: Path, dead: bool) -> None:
        if dead:
            self.dead_dir.mkdir(parents=True, exist_ok=True)
            os.replace(path, self.dead_dir / path.name)
        else:
            path.unlink(missing_ok=True)

    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                attempt = await self._deliver_head(attempt)
            except Exception:
                # A bug must not end delivery for the daemon's lifetime: log, pause, go on.
                attempt += 1
                logger.exception("webhook: delivery loop error; retrying")
                await asyncio.sleep(self._backoff(attempt, None))

    async def _deliver_head(self, attempt: int) -> int:
        """Try the oldest pending event once; return the new consecutive-failure count."""
        path = self._pending[0]
        m = _NAME.match(path.name)
        event_id = m[2] if m is not None else path.name
        try:
            body = await asyncio.to_thread(_read_entry, path, event_id)
        except (OSError, ValueError) as err:
            outcome, detail, hint = "dead", f"unreadable outbox file {path.name}: {err}", None
        else:
            # An endpoint trickling its status line or headers is cut off here;
            # the thread ends by itself and, a daemon, never holds the exit.
            limit_s = self.cfg.timeout_s + _GRACE_S
            session = self._session
            assert session is not None
            try:
                post = in_daemon_thread(self._post, session, body, event_id, name="webhook-post")
                outcome, detail, hint = await asyncio.wait_for(post, limit_s)
            except TimeoutError:
                outcome, detail, hint = "retry", f"no answer from {self.cfg.url} within " \
                    f"{limit_s:.1f} s", None
                # Its thread still reads from that session (requests' sessions are
                # not for sharing across threads): the next POST gets its own.
                self._session = requests.Session()
                session.close()
        if outcome == "retry":
            attempt += 1
            delay = self._backoff(attempt, hint)
            if self._on_failure is not None:
                self._on_failure()
            logger.warning("webhook: event %s not delivered (%s); attempt %d, retrying "
                           "in %.1f s; %d pending", event_id, detail, attempt, delay,
                           len(self._pending))
            await asyncio.sleep(delay)
            return attempt
        try:
            await asyncio.to_thread(self._finish, path, outcome == "dead")
        except OSError as err:
            logger.error("webhook: cannot remove %s after delivery: %s", path, err)
        self._pending.pop(0)
        self._ids.discard(event_id)
        self._depth_changed()
        if outcome == "ok":
            logger.debug("webhook: delivered event %s", event_id)
            if self._on_delivered is not None:
                self._on_delivered()
        else:
            logger.error("webhook: event %s rejected permanently (%s); moved to %s",
                         event_id, detail, self.dead_dir)
            if self._on_failure is not None:
                self._on_failure()
        return 0

    async def close(self, timeout_s: float) -> None:
        """Try to deliver what is pending for up to ``timeout_s``, then stop.

        Undelivered events stay in the outbox for the next start.
        """
        task, self._task = self._task, None
        if task is None:
            return
        if self._pending and not task.done():
            try:
                await asyncio.wait_for(self._empty.wait(), timeout_s)
            except TimeoutError:
                logger.warning("webhook: %d event(s) left in %s for the next start",
                               len(self._pending), self.outbox)
        await cancel_and_wait(task, "webhook sink closing")
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just our delivery task
        if self._session is not None:
            self._session.close()
            self._session = None
