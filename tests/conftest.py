"""Shared pytest fixtures. Keep each fixture small and documented; helpers live
in their own modules (e.g. ``tests/support/hls_server.py``) so tests can import them."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from support.hls_server import (
    LiveHlsServer,
    TsSegment,
    load_real_segments,
    make_ffmpeg_segments,
)

from listener.config import FetchConfig
from listener.sources.http_client import HttpClient


@pytest.fixture(autouse=True)
def _no_listener_log_handler_left() -> Iterator[None]:
    """A command run in this process (``main([...])``) sets up logging on the stderr
    of its moment, which pytest closes after the test: later tests' log records
    would fail on it ("Logging error ... I/O operation on closed file")."""
    yield
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_listener", False)]:
        root.removeHandler(handler)


@pytest.fixture(scope="session")
def ffmpeg_segments(tmp_path_factory: pytest.TempPathFactory) -> list[TsSegment]:
    """Five real AAC/MPEG-TS segments (10 s, 48 kHz stereo) cut by ffmpeg from
    the L pod recording, made once per test session."""
    return make_ffmpeg_segments(tmp_path_factory.mktemp("ffmpeg_hls"))


@pytest.fixture(scope="session")
def real_segments() -> list[TsSegment]:
    """The three real Orcasound segments of rpi_orcasound_lab/1594150218."""
    return load_real_segments()


@pytest.fixture
def hls_server() -> Iterator[LiveHlsServer]:
    """A started :class:`LiveHlsServer` on 127.0.0.1, stopped after the test."""
    with LiveHlsServer() as server:
        yield server


@pytest.fixture
def fast_fetch_config() -> FetchConfig:
    """Fetch settings scaled down so retry and breaker tests take milliseconds."""
    return FetchConfig(connect_timeout_s=1.0, read_timeout_s=0.5, retries=3,
                       backoff_initial_s=0.01, backoff_max_s=0.05, breaker_failures=20,
                       breaker_reset_s=0.3)


@pytest.fixture
def http_client(fast_fetch_config: FetchConfig) -> Iterator[HttpClient]:
    """An :class:`HttpClient` on :func:`fast_fetch_config`, closed after the test."""
    with HttpClient(fast_fetch_config) as client:
        yield client
