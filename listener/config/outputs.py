"""The ``outputs`` section: where detections go (JSON lines, webhook, OrcaHello, clips)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from listener.config.base import Seconds, Timeout, _Section


class JsonlSinkConfig(_Section):
    path: Path


class WebhookSinkConfig(_Section):
    url: str
    token_env: str | None = None
    token_file: Path | None = None
    timeout_s: Timeout = 10.0
    backoff_initial_s: Timeout = 1.0
    backoff_max_s: Seconds = 300.0
    outbox_dir: Path | None = None

    @model_validator(mode="after")
    def _check_url(self) -> WebhookSinkConfig:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must be http:// or https://, got {self.url!r}")
        return self


class OrcaHelloSinkConfig(_Section):
    """One JSON document per positive clip, in OrcaHello's record format."""

    dir: Path
    audio_base_uri: str = ""
    image_base_uri: str = ""


class ClipSinkConfig(_Section):
    """The detection's audio plus a spectrogram PNG."""

    dir: Path
    format: Literal["wav", "flac"] = "flac"
    before_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    after_s: Annotated[float, Field(ge=0, le=600)] = 10.0


class OutputsConfig(_Section):
    jsonl: JsonlSinkConfig | None = None
    webhook: WebhookSinkConfig | None = None
    orcahello: OrcaHelloSinkConfig | None = None
    clips: ClipSinkConfig | None = None
    log: bool = True
