"""Typed station configuration: one YAML file per hydrophone.

Every section is a pydantic model that rejects unknown keys. Defaults are the
production OrcaHello settings (``config/example.yaml`` documents every field).
Errors name the file, the line and the dotted key, and say what is allowed.
Secrets (webhook tokens) never live in YAML: the config names an environment
variable or a credentials file that holds them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from listener.errors import ConfigError

log = logging.getLogger(__name__)

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StationConfig(_Section):
    """Who this hydrophone is; used in every event record and metric label."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = ""
    longitude: float = Field(default=0.0, ge=-180, le=180)
    latitude: float = Field(default=0.0, ge=-90, le=90)


class FetchConfig(_Section):
    """HTTP behaviour for playlists and segments."""

    connect_timeout_s: Positive = 5.0
    read_timeout_s: Positive = 15.0
    retries: int = Field(default=4, ge=0, le=20)
    backoff_initial_s: Positive = 0.5
    backoff_max_s: Positive = 20.0
    max_playlist_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_segment_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: Positive = 30.0
    user_agent: str = "listener/0.1 (+https://github.com/orcasound)"


class StreamConfig(_Section):
    """Where the audio comes from.

    ``kind: orcasound`` follows ``<base_url>/<node>/latest.txt`` into
    ``hls/<ts>/live.m3u8``; ``kind: hls`` follows any HLS playlist URL.
    """

    kind: Literal["orcasound", "hls"] = "orcasound"
    base_url: str = "https://s3-us-west-2.amazonaws.com/audio-orcasound-net"
    node: str | None = None
    url: str | None = None
    poll_interval_s: Positive = 5.0
    start_segments_back: int = Field(default=3, ge=0)
    ffmpeg_start_offset_s: float = 0.0
    stale_after_s: Positive = 120.0
    fetch: FetchConfig = FetchConfig()

    @model_validator(mode="after")
    def _check_source(self) -> StreamConfig:
        if self.kind == "orcasound" and not self.node:
            raise ValueError("kind 'orcasound' needs 'node' (e.g. rpi_orcasound_lab)")
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

    sample_rate: int = Field(default=20000, gt=0)
    n_fft: int = Field(default=2560, gt=0)
    hop_length: int = Field(default=256, gt=0)
    n_mels: int = Field(default=256, gt=0)
    f_min: NonNegative = 0.0
    f_max: Positive = 10000.0
    mel_sample_rate: int = Field(default=16000, gt=0)
    top_db: Positive = 100.0
    frames: int = Field(default=312, gt=0)
    padding: Literal["fastai", "waveform"] = "fastai"


Precision = Literal["auto", "float32", "bfloat16", "float16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "float32", "bfloat16", "float16")


class ModelConfig(_Section):
    """The network, its weights and where it runs.

    ``precision``: the network's number format (the frontend is always
    float32). ``auto`` = float16 on CUDA, float32 on CPU (exact parity);
    ``bfloat16`` on CPU needs native support (AVX512-BF16 or AMX) and is
    refused without it; ``float16`` needs CUDA. ``docs/model.md`` gives the
    measured error of each. The old ``fp16: true|false`` key is still read
    (``true`` -> ``auto``, ``false`` -> ``float32``) with a deprecation warning.
    """

    weights: Path | None = None
    architecture: Literal["auto", "resnet18", "resnet50"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "auto"
    batch_size: int = Field(default=16, ge=1, le=1024)
    cpu_threads: int = Field(default=0, ge=0)
    channels_last: bool = True
    fuse_batchnorm: bool = True
    max_batch_wait_s: NonNegative = 0.25
    model_id: str = "orcahello-srkw"

    @model_validator(mode="before")
    @classmethod
    def _map_fp16(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "fp16" not in data:
            return data
        data = dict(data)
        fp16 = data.pop("fp16")
        if not isinstance(fp16, bool):
            raise ValueError(f"fp16 must be true or false, got {fp16!r} "
                             "(deprecated: use precision: auto|float32|bfloat16|float16)")
        mapped = "auto" if fp16 else "float32"
        if "precision" in data:
            log.warning("model.fp16 is deprecated and ignored: model.precision (%s) is set",
                        data["precision"])
        else:
            log.warning("model.fp16 is deprecated: read fp16: %s as precision: %s",
                        str(fp16).lower(), mapped)
            data["precision"] = mapped
        return data


class DetectionConfig(_Section):
    """Windows and the per-clip decision rule (OrcaHello's production values)."""

    window_s: Positive = 2.0
    hop_s: Positive = 1.0
    clip_s: Positive = 60.0
    local_threshold: float = Field(default=0.5, ge=0, le=1)
    global_threshold: int = Field(default=3, ge=1)
    encounter_gap_s: NonNegative = 300.0

    @model_validator(mode="after")
    def _check_lengths(self) -> DetectionConfig:
        if self.hop_s > self.window_s:
            raise ValueError(f"hop_s ({self.hop_s}) must not exceed window_s ({self.window_s})")
        if self.clip_s < self.window_s:
            raise ValueError(f"clip_s ({self.clip_s}) must be at least window_s ({self.window_s})")
        return self


class BufferConfig(_Section):
    """What happens when inference cannot keep up with the stream."""

    max_backlog_s: Positive = 600.0


class JsonlSinkConfig(_Section):
    path: Path


class WebhookSinkConfig(_Section):
    url: str
    token_env: str | None = None
    token_file: Path | None = None
    timeout_s: Positive = 10.0
    backoff_initial_s: Positive = 1.0
    backoff_max_s: Positive = 300.0
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
    before_s: NonNegative = 10.0
    after_s: NonNegative = 10.0


class OutputsConfig(_Section):
    jsonl: JsonlSinkConfig | None = None
    webhook: WebhookSinkConfig | None = None
    orcahello: OrcaHelloSinkConfig | None = None
    clips: ClipSinkConfig | None = None
    log: bool = True


class MetricsConfig(_Section):
    """The HTTP endpoint serving /metrics, /healthz and /readyz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=9108, ge=0, le=65535)


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
    return cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"precision": precision})})


def _line_index(node: yaml.Node, prefix: tuple[str | int, ...], out: dict[tuple, int]) -> None:
    """Map each dotted key path to its 1-based line in the YAML text."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = (*prefix, str(key_node.value))
            out[path] = key_node.start_mark.line + 1
            _line_index(value_node, path, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            path = (*prefix, i)
            out[path] = item.start_mark.line + 1
            _line_index(item, path, out)


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative file paths in a config are relative to the config file."""

    def fix(section: dict[str, Any] | None, key: str) -> None:
        if isinstance(section, dict) and isinstance(section.get(key), str):
            p = Path(os.path.expandvars(os.path.expanduser(section[key])))
            section[key] = str(p if p.is_absolute() else base / p)

    fix(data.get("model"), "weights")
    fix(data.get("state"), "dir")
    outputs = data.get("outputs")
    if isinstance(outputs, dict):
        fix(outputs.get("jsonl"), "path")
        fix(outputs.get("orcahello"), "dir")
        fix(outputs.get("clips"), "dir")
        fix(outputs.get("webhook"), "outbox_dir")
        fix(outputs.get("webhook"), "token_file")


def parse_config(text: str, path: str = "<string>", base_dir: Path | None = None) -> Config:
    """Parse and validate YAML text; raise :class:`ConfigError` naming file:line key."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not valid YAML: {getattr(err, 'problem', err)}", path=path,
                          line=line) from err
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections "
                          "(station, stream, model, ...)", path=path, line=1)
    lines: dict[tuple, int] = {}
    if root is not None:
        _line_index(root, (), lines)
    if base_dir is not None:
        _resolve_paths(data, base_dir)
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(p for p in first["loc"] if not (isinstance(p, str) and "[" in p))
        line = None
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        key = ".".join(str(p) for p in loc) or None
        message = _explain(first, err.error_count())
        raise ConfigError(message, path=path, line=line, key=key) from err


def _explain(error: Any, count: int) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        msg = "unknown key (not allowed here; config/example.yaml lists every allowed key)"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "literal_error":
        msg = f"{error['msg']}, got {error.get('input')!r}"
    else:
        msg = f"{error['msg']} (got {error.get('input')!r})"
    if count > 1:
        msg += f" [and {count - 1} more problem(s)]"
    return msg


def load_config(path: str | Path) -> Config:
    """Read a station config file; relative paths in it resolve against its folder."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or err}", path=str(p)) from err
    return parse_config(text, path=str(p), base_dir=p.resolve().parent)
