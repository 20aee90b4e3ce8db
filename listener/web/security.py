"""Who may change things: loopback binds, bearer tokens, CSRF and Host checks.

Read-only pages need no login. On a loopback bind every request, reads
included, needs a loopback ``Host`` (the server checks it for every route),
which defeats DNS rebinding: a page on ``evil.example`` re-resolved to
127.0.0.1 still sends ``Host: evil.example``. Writes (reviews) need, always:

* a ``Host`` the server answers to (checked here again);
* an ``Origin``, when the browser sends one, equal to the server's own;
* the ``X-CSRF-Token`` header with the per-process token from
  ``/api/session``, which another site's page cannot read (no CORS);

and on a non-loopback bind also ``Authorization: Bearer <token>``. The token
comes from the environment (``LISTENER_CONSOLE_TOKEN``), a file it names
(``LISTENER_CONSOLE_TOKEN_FILE``) or systemd's credentials
(``$CREDENTIALS_DIRECTORY/console-token``); never from the YAML config.
Without one, a non-loopback console is read-only.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from listener.errors import ConfigError

TOKEN_ENV = "LISTENER_CONSOLE_TOKEN"
TOKEN_FILE_ENV = "LISTENER_CONSOLE_TOKEN_FILE"
CREDENTIAL_NAME = "console-token"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a Host header's name) is loopback only."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name in a ``Host`` header: ``[::1]:9108`` -> ``[::1]``, ``a:80`` -> ``a``."""
    if host.startswith("["):
        return host[:host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def load_token(env: Mapping[str, str] | None = None) -> str | None:
    """The console's bearer token, or ``None`` when none is configured.

    Raises:
        ConfigError: a named token file cannot be read or is empty.
    """
    env = os.environ if env is None else env
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV].strip()
    candidates = []
    if env.get(TOKEN_FILE_ENV):
        candidates.append((Path(env[TOKEN_FILE_ENV]), True))
    if env.get("CREDENTIALS_DIRECTORY"):
        candidates.append((Path(env["CREDENTIALS_DIRECTORY"]) / CREDENTIAL_NAME, False))
    for path, required in candidates:
        try:
            token = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            if required:
                raise ConfigError(f"{TOKEN_FILE_ENV}={path}: no such file") from None
            continue
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"console token file {path}: cannot read it: {err}") from err
        if not token:
            raise ConfigError(f"console token file {path} is empty")
        return token
    return None


class WriteGuard:
    """Checks a state-changing request; raises an HTTP error naming what is missing."""

    def __init__(self, bind_host: str, token: str | None) -> None:
        self.loopback = is_loopback(bind_host)
        self.token = token
        self.csrf = secrets.token_urlsafe(32)

    @property
    def needs_token(self) -> bool:
        return not self.loopback

    def check(self, request: web.Request) -> None:
        host = request.headers.get("Host", "")
        if self.loopback and not is_loopback(host_name(host)):
            raise web.HTTPForbidden(text=f"Host {json.dumps(host[:100])} is not a loopback "
                                         "name\n")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{host}":
            raise web.HTTPForbidden(text=f"cross-origin request from {json.dumps(origin[:100])} "
                                         "refused\n")
        sent = request.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(sent.encode(), self.csrf.encode()):
            raise web.HTTPForbidden(text="missing or wrong X-CSRF-Token (GET /api/session)\n")
        if self.loopback:
            return
        if self.token is None:
            raise web.HTTPForbidden(
                text=f"reviews are disabled on a non-loopback bind without a token: set "
                     f"{TOKEN_ENV}, {TOKEN_FILE_ENV} or the systemd credential "
                     f"{CREDENTIAL_NAME}\n")
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else ""
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            raise web.HTTPUnauthorized(text="a bearer token is required for reviews\n",
                                       headers={"WWW-Authenticate": "Bearer"})
