"""Log lines about clients, rate-limited and escaped: a flood of bad requests is one line a minute.

Anyone who can reach the port can send malformed requests, and aiohttp logs
each with an ERROR and a traceback (``Error handling request``): 2,000 of
them once added 1.5 MB of log in a second. :class:`Throttled` counts such
events and writes at most one WARNING per ``interval_s`` with the counts and
the last example; :class:`AiohttpLog` is the logger handed to aiohttp's
request handler, routing its parse errors there (and everything else on to
the ``aiohttp.server`` logger unchanged). :func:`escape` makes any
client-supplied text safe for a one-line text log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)
_PARSE_ERROR = "Error handling request"


def escape(text: object, limit: int = 200) -> str:
    """``text`` on one line: control characters, separators and lone surrogates as escapes."""
    out = []
    for ch in str(text)[:limit]:
        code = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or code in (0x2028, 0x2029) \
                or 0xD800 <= code < 0xE000:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if len(str(text)) > limit else "")


class Throttled:
    """Counts events by kind; logs at most one line per ``interval_s`` with the counts.

    The first event after a quiet interval is logged at once; later ones are
    counted and reported by the next :meth:`note` or :meth:`flush` that finds
    the interval over (the server's heartbeat calls :meth:`flush`).
    """

    def __init__(self, log: logging.Logger, what: str, interval_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.what = what
        self.interval_s = interval_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.total = 0
        self._example = ""
        self._last: float | None = None

    def note(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        self.total += 1
        if example:
            self._example = example
        self.flush()

    def flush(self) -> None:
        if not self.counts:
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.interval_s:
            return
        span = f"in the last {self.interval_s:g} s" if self._last is not None else "just now"
        parts = ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items()))
        example = f"; the last: {self._example}" if self._example else ""
        self.log.warning("%s %s: %s%s", self.what, span, parts, example)
        self.counts.clear()
        self._example = ""
        self._last = now


class AiohttpLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's request-handler logger: parse errors go to ``report``, without traceback."""

    def __init__(self, report: Throttled) -> None:
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.report = report

    def _parse_error(self, msg: object, args: tuple[Any, ...], kw: dict[str, Any]) -> bool:
        if not str(msg).startswith(_PARSE_ERROR):
            return False
        exc = kw.get("exc_info")
        peer = escape(args[0], 60) if args else "?"
        status = getattr(exc, "code", 400)
        detail = getattr(exc, "message", None) or (type(exc).__name__ if exc else "")
        first = str(detail).strip().splitlines()[0] if str(detail).strip() else ""
        self.report.note(f"malformed ({status})", f"{escape(first, 120)} from {peer}")
        return True

    def exception(self, msg: object, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        if not self._parse_error(msg, args, kw):
            self.logger.exception(msg, *args, **kw)

    def debug(self, msg: object, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        if not self._parse_error(msg, args, kw):
            self.logger.debug(msg, *args, **kw)
