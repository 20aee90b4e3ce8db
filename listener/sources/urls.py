"""Which URLs the fetcher requests, and the key a host's circuit breaker goes by."""

from __future__ import annotations

from urllib.parse import urlsplit

from listener.errors import FetchError


def host_key(url: str) -> str:
    """The breaker's key for ``url``: scheme and host, lower-cased."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_url(url: str) -> None:
    """Refuse what is not an http(s) URL with a host, before any request is made."""
    try:
        parts = urlsplit(url)
    except ValueError as err:
        raise FetchError(url, f"not a valid URL: {err}") from err
    if parts.scheme not in ("http", "https"):
        raise FetchError(url, f"only http:// and https:// URLs are fetched, got scheme "
                              f"{parts.scheme!r}")
    if not parts.hostname:
        raise FetchError(url, "URL has no host")
