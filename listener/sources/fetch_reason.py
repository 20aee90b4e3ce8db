"""A short reason for a failed HTTP request, for logs, readiness and the console.

requests and urllib3 describe a refused connection in 250 characters
(``HTTPConnectionPool(host=..., port=...): Max retries exceeded with url: ...
(Caused by NewConnectionError(...))``) that repeat the URL we already name.
An operator needs the root cause: the host name does not resolve, the
connection was refused, the TLS handshake failed. The full exception stays
chained (``raise ... from err``) for a traceback.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import requests
import urllib3

LIMIT = 200  # characters of a reason we could not make shorter


def _chain(err: BaseException) -> Iterator[BaseException]:
    """``err``, then what caused it: chained exceptions and urllib3's ``reason`` attributes."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        inner = [getattr(e, "reason", None), e.__cause__, e.__context__,
                 *(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))]
        todo += [x for x in inner if isinstance(x, BaseException)]


def brief(err: BaseException) -> str:
    """The root cause of ``err`` in a few words."""
    chain = list(_chain(err))
    for e in chain:
        if isinstance(e, socket.gaierror):
            return f"cannot resolve the host name ({e.strerror or e})"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, ConnectionResetError):
            return "connection reset by the server"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted ({e.verify_message or e.reason})"
        if isinstance(e, ssl.SSLError):
            return f"TLS handshake failed ({e.reason or e})"
    for e in chain:
        if isinstance(e, requests.exceptions.ConnectTimeout
                      | urllib3.exceptions.ConnectTimeoutError):
            return "no connection within the connect timeout"
        if isinstance(e, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError
                      | TimeoutError):
            return "no data within the read timeout"
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
    text = str(err)
    return text if len(text) <= LIMIT else text[:LIMIT - 3] + "..."
