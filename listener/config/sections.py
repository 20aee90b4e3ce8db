"""The station config's sections: one pydantic model each, rejecting unknown keys.

Every section is a pydantic model that rejects unknown keys. Defaults are the
production OrcaHello settings (``config/example.yaml`` documents every field).
Errors name the file, the line and the dotted key, and say what is allowed.
Secrets (webhook tokens) never live in YAML: the config names an environment
variable or a credentials file that holds them. The model sections live in
:mod:`listener.config.models`.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from listener.config.base import (
    NonNegative,
    Seconds,
    SecondsOrZero,
    Timeout,
    _Section,
    hop_problem,
)
from listener.config.models import (
    PRECISIONS,
    ModelConfig,
    ModelEntry,
    check_model_list,
)
from listener.config.outputs import OutputsConfig
from listener.errors import ConfigError

log = logging.getLogger(__name__)

class StationConfig(_Section):
    """Who this hydrophone is; used in every event record and metric label."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = ""
    longitude: float = Field(default=0.0, ge=-180, le=180)
    latitude: float = Field(default=0.0, ge=-90, le=90)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        # The id names files (<id>.state.json, coverage-<id>.jsonl): '..' or a
        # leading dot would make hidden files or point at the parent folder.
        if value.startswith("."):
            raise ValueError(f"must not start with a dot ('.', '..' and hidden names are "
                             f"refused; it names files), got {value!r}")
        return value


class FetchConfig(_Section):
    """HTTP behaviour for playlists and segments."""

    connect_timeout_s: Timeout = 5.0
    read_timeout_s: Timeout = 15.0
    #: A whole download (one attempt) must end within this: the read timeout
    #: only bounds each wait for data, so a trickled body would pass it.
    max_fetch_s: Timeout = 30.0
    retries: int = Field(default=4, ge=0, le=20)
    backoff_initial_s: Timeout = 0.5
    backoff_max_s: Timeout = 20.0
    max_playlist_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_segment_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    breaker_failures: int = Field(default=5, ge=1, le=1000)
    breaker_reset_s: Timeout = 30.0
    user_agent: str = "listener/0.1 (+https://github.com/orcasound)"


# An Orcasound node name becomes part of bucket keys and URLs: a plain folder
# name, no slashes, no '.' or '..', nothing a URL would read as a query.
_NODE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def check_node_name(node: str) -> str:
    """``node`` if it is a valid Orcasound node folder name, else ``ValueError``."""
    if not _NODE_NAME.fullmatch(node) or node in (".", ".."):
        raise ValueError(f"node must be a folder name like rpi_orcasound_lab, got {node!r}")
    return node


class StreamConfig(_Section):
    """Where the audio comes from.

    ``kind: orcasound`` follows ``<base_url>/<node>/latest.txt`` into
    ``hls/<ts>/live.m3u8``; ``kind: hls`` follows any HLS playlist URL.
    """

    kind: Literal["orcasound", "hls"] = "orcasound"
    base_url: str = "https://s3-us-west-2.amazonaws.com/audio-orcasound-net"
    node: str | None = None
    url: str | None = None
    poll_interval_s: Timeout = 5.0
    start_segments_back: int = Field(default=3, ge=0, le=1_000_000)
    ffmpeg_start_offset_s: float = Field(default=0.0, ge=-60, le=60)
    stale_after_s: Seconds = 120.0
    #: No audio for this long in the middle of a clip: the clip is decided on the
    #: windows it has (a node gone offline). Well above the segment cadence, or
    #: bursty uploads would cut healthy clips in two (docs/daemon.md).
    stalled_clip_after_s: Annotated[float, Field(ge=10, le=7 * 86400)] = 120.0
    #: After a node restart, how long the old folder is still polled for
    #: segments its uploader publishes late (Orcasound).
    restart_grace_s: Annotated[float, Field(ge=0, le=600)] = 10.0
    fetch: FetchConfig = FetchConfig()

    @model_validator(mode="after")
    def _check_source(self) -> StreamConfig:
        if self.kind == "orcasound" and not self.node:
            raise ValueError("kind 'orcasound' needs 'node' (e.g. rpi_orcasound_lab)")
        if self.node is not None:
            check_node_name(self.node)
        if self.kind == "hls" and not self.url:
            raise ValueError("kind 'hls' needs 'url' (an http(s) .m3u8 URL)")
        for name in ("base_url", "url"):
            value = getattr(self, name)
            if value and not value.startswith(("http://", "https://")):
                raise ValueError(f"{name} must be an http:// or https:// URL, got {value!r}")
        return self


class FrontendConfig(_Section):
    """The mel-spectrogram frontend. Defaults reproduce the trained model.

    ``padding: fastai`` pads the dB spectrogram with 0.0 dB to ``frames``
    (what the weights were trained on); ``padding: waveform`` pads the audio
    with silence before the STFT instead (physically sensible, but it does NOT
    match the production weights). ``mel_sample_rate`` is the rate the mel
    filterbank is labelled with: 16 000 reproduces torchaudio's default that
    the model was trained with; 20 000 is the "correct" labelling.
    """

    # Bounds keep a typo (n_fft: 1e8) from allocating gigabytes at start-up.
    sample_rate: int = Field(default=20000, gt=0, le=384_000)
    n_fft: int = Field(default=2560, gt=0, le=65536)
    hop_length: int = Field(default=256, gt=0, le=65536)
    n_mels: int = Field(default=256, gt=0, le=2048)
    f_min: NonNegative = 0.0
    f_max: Annotated[float, Field(gt=0, le=192_000)] = 10000.0
    mel_sample_rate: int = Field(default=16000, gt=0, le=384_000)
    top_db: Annotated[float, Field(gt=0, le=1000)] = 100.0
    frames: int = Field(default=312, gt=0, le=100_000)
    padding: Literal["fastai", "waveform"] = "fastai"


class DetectionConfig(_Section):
    """Windows and the per-clip decision rule (OrcaHello's production values)."""

    # A hop of nanoseconds means billions of windows per second of audio.
    window_s: Annotated[float, Field(ge=0.1, le=600)] = 2.0
    hop_s: Annotated[float, Field(ge=0.01, le=600)] = 1.0
    clip_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    local_threshold: float = Field(default=0.5, ge=0, le=1)
    global_threshold: int = Field(default=3, ge=1)
    encounter_gap_s: SecondsOrZero = 300.0

    @model_validator(mode="after")
    def _check_lengths(self) -> DetectionConfig:
        if (problem := hop_problem(self.window_s, self.hop_s)) is not None:
            raise ValueError(problem)
        if self.clip_s < self.window_s:
            raise ValueError(f"clip_s ({self.clip_s}) must be at least window_s ({self.window_s})")
        return self


def rule_units(clip_s: float, window_s: float, hop_s: float) -> int:
    """How many hop-long units the per-second rule scores in one clip.

    The same count as :func:`listener.detection.rule.decide_clip` (which the
    config cannot import): units from the clip's start to its last window's end.
    """
    eps = 1e-6
    windows = max(0, math.floor((clip_s - window_s) / hop_s + eps) + 1)
    span = (windows - 1) * hop_s + window_s if windows else clip_s
    return max(1, math.ceil(span / hop_s - eps))


class BufferConfig(_Section):
    """What happens when inference cannot keep up with the stream."""

    max_backlog_s: Seconds = 600.0


class HttpLimitsConfig(_Section):
    """Bounds on the HTTP endpoint's connections (docs/operations.md, "Hardening")."""

    #: Open connections at once; keep it well under the descriptor limit
    #: (it is lowered to a quarter of the soft ``RLIMIT_NOFILE`` at start).
    max_connections: int = Field(default=256, ge=8, le=65536)
    #: Open connections from one non-loopback address at once (one client
    #: cannot take every slot); behind a proxy on another host every client
    #: shares its address: raise this to ``max_connections`` there.
    max_connections_per_client: int = Field(default=64, ge=1, le=65536)
    #: A request head (and a review body) must arrive within this.
    read_timeout_s: float = Field(default=5.0, gt=0, le=120)
    #: A response whose output has not moved for this long is dropped
    #: (a client, such as a live viewer, that stopped reading).
    write_timeout_s: float = Field(default=10.0, gt=0, le=600)
    #: A connection on which nothing moved either way for this long is dropped.
    idle_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_header_bytes: int = Field(default=8192, ge=1024, le=65536)
    #: Malformed requests and dropped connections: at most one log line per interval.
    log_interval_s: float = Field(default=60.0, ge=1, le=86400)


class MetricsConfig(_Section):
    """The HTTP endpoint serving /metrics, /healthz and /readyz (and the console)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)
    limits: HttpLimitsConfig = HttpLimitsConfig()


class StateConfig(_Section):
    dir: Path = Path("var/state")


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Config(_Section):
    """A whole station config file."""

    station: StationConfig
    stream: StreamConfig | None = None
    frontend: FrontendConfig = FrontendConfig()
    model: ModelConfig = ModelConfig()
    detection: DetectionConfig = DetectionConfig()
    buffer: BufferConfig = BufferConfig()
    outputs: OutputsConfig = OutputsConfig()
    metrics: MetricsConfig = MetricsConfig()
    state: StateConfig = StateConfig()
    logging: LoggingConfig = LoggingConfig()
    models: tuple[ModelEntry, ...] | None = None
    # The file and lines it was read from (listener.config.origin); not part of its value.
    _origin: Any = PrivateAttr(default=None)

    @field_validator("models")
    @classmethod
    def _check_model_list(cls, models: tuple[ModelEntry, ...] | None
                          ) -> tuple[ModelEntry, ...] | None:
        if models is not None:
            check_model_list(models)
        return models

    @model_validator(mode="after")
    def _check_models(self) -> Config:
        if self.models is None:
            return self
        if "model" in self.model_fields_set:
            raise ValueError("set either 'model' (one model) or 'models' (a list), not both")
        primary = next(m for m in self.models if m.role == "primary")
        # cfg.model stays the primary's settings, so code written for one
        # model (the daemon, replay, detect) keeps working unchanged.
        object.__setattr__(self, "model", primary.model_config_view())
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        # With ``models:``, ``model`` is derived from the primary entry: dumping
        # it too would give a file that is refused ("not both") when loaded back.
        data = handler(self)
        if self.models is not None and isinstance(data, dict):
            data.pop("model", None)
        return data

    def model_entries(self) -> tuple[ModelEntry, ...]:
        """Every configured model; a single ``model:`` section is a list of one."""
        if self.models is not None:
            return self.models
        fields = {k: getattr(self.model, k) for k in ModelConfig.model_fields
                  if k != "model_id"}
        return (ModelEntry(**fields, id=self.model.model_id),)


def default_config(station_id: str = "local") -> Config:
    """A config with every default, for ``listener detect`` without ``--config``."""
    return Config(station=StationConfig(id=station_id))


def with_precision(cfg: Config, precision: str | None) -> Config:
    """``cfg`` with ``model.precision`` replaced (a command line's ``--precision``).

    ``None`` returns ``cfg`` unchanged; anything but one of :data:`PRECISIONS`
    is a :class:`ConfigError`.
    """
    if precision is None:
        return cfg
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, "
                          f"got {precision!r}")
    return with_every_model(cfg, precision=precision)


def with_every_model(cfg: Config, **update: object) -> Config:
    """``cfg`` with ``update`` (a command line's ``--device``, ``--precision``) applied
    to ``model`` and to every entry of ``models:``, shadows included."""
    new: dict[str, object] = {"model": cfg.model.model_copy(update=update)}
    if cfg.models is not None:
        new["models"] = tuple(m.model_copy(update=update) for m in cfg.models)
    return cfg.model_copy(update=new)
