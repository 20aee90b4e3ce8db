"""The exception tree of listener.

Every error a user can cause is a :class:`ListenerError`; the CLI prints its
message (no traceback) and exits non-zero. Errors of libraries underneath
(requests, ffmpeg, yaml, safetensors, torch) are converted at the boundary with
``raise X(...) from err`` so callers only catch ours::

    ListenerError
    ├── ConfigError          bad YAML / unknown key / out-of-range value
    ├── FFmpegNotFoundError  no ffmpeg on PATH and no imageio-ffmpeg binary
    ├── DecodeError          ffmpeg could not read a file or a segment
    ├── ModelLoadError       missing, unreadable or mismatched weights
    ├── UnsafeCheckpointError  a pickle asked for something not allow-listed
    ├── FetchError           HTTP fetch failed after retries
    │   └── CircuitOpenError the host's circuit breaker is open
    ├── PlaylistError        a playlist could not be parsed or is too large
    └── SinkError            an event sink could not write
"""

from __future__ import annotations


class ListenerError(Exception):
    """Base class of every error listener raises on purpose."""


class ConfigError(ListenerError):
    """A station config is invalid; the message names the file, line and key."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        where = path or "<config>"
        if line is not None:
            where = f"{where}:{line}"
        text = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        super().__init__(text)
        self.path = path
        self.line = line
        self.key = key


class FFmpegNotFoundError(ListenerError):
    """Neither an ffmpeg on PATH nor the imageio-ffmpeg binary exists."""


class DecodeError(ListenerError):
    """ffmpeg failed on an input; carries the last lines of its stderr."""

    def __init__(self, source: str, reason: str, stderr_tail: str = "") -> None:
        text = f"{source}: cannot decode: {reason}"
        if stderr_tail:
            text += f"\nffmpeg said:\n{stderr_tail}"
        super().__init__(text)
        self.source = source
        self.reason = reason
        self.stderr_tail = stderr_tail


class ModelLoadError(ListenerError):
    """Weights are missing, unreadable or do not fit the network."""


class UnsafeCheckpointError(ModelLoadError):
    """A pickled checkpoint referenced a global outside the allow-list."""


class FetchError(ListenerError):
    """An HTTP fetch failed (after its retries)."""

    def __init__(self, url: str, reason: str, status: int | None = None) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.status = status


class CircuitOpenError(FetchError):
    """Requests to a host are suspended after repeated failures."""


class PlaylistError(ListenerError):
    """A playlist is malformed, oversized or of an unsupported kind."""


class SinkError(ListenerError):
    """An event sink could not deliver or store an event."""
