"""The body and the observed HttpClient that the HttpClient tests share."""

from __future__ import annotations

from listener.config import FetchConfig
from listener.sources.http_client import FetchResult, HttpClient

BODY = bytes(range(256)) * 20  # 5120 bytes


def _client(config: FetchConfig, **changes: object) -> tuple[HttpClient, list[FetchResult]]:
    results: list[FetchResult] = []
    return HttpClient(config.model_copy(update=changes), on_result=results.append), results
