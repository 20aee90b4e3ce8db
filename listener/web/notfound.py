"""The console's answer for what does not exist: an HTML page, or JSON under ``/api/``.

A person who mistypes a console URL gets a page in the console's style with a
way back; a program calling the API gets ``{"error": "..."}`` with status
404. Both carry the reason a handler gave ("no station 'x' here"), escaped;
the router's own ("404: Not Found") is replaced by a plain "not found".
"""

from __future__ import annotations

import html
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Where the reason goes in ``static/404.html``.
PLACEHOLDER = b"{{reason}}"


def reason_of(err: web.HTTPNotFound) -> str:
    """The handler's reason, one line, or "not found" for the router's own 404."""
    text = (err.text or "").strip()
    return "not found" if not text or text.startswith("404:") else text.splitlines()[0][:200]


def not_found_middleware(page: bytes) -> Middleware:
    """A middleware answering each 404 with ``page`` (the reason put in at
    :data:`PLACEHOLDER`), or with JSON for paths under ``/api/``."""
    if PLACEHOLDER not in page:
        raise ValueError(f"the 404 page has no {PLACEHOLDER.decode()} placeholder")

    @web.middleware
    async def not_found(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound as err:
            reason = reason_of(err)
            if request.path.startswith("/api/"):
                return web.Response(status=404, text=json.dumps({"error": reason}) + "\n",
                                    content_type="application/json")
            body = page.replace(PLACEHOLDER, html.escape(reason).encode())
            return web.Response(status=404, body=body, content_type="text/html",
                                charset="utf-8")

    return not_found
