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
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from listener.errors import ConfigError

log = logging.getLogger(__name__)

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
# Durations get upper bounds too: a finite but absurd value (1e308 s) would
# overflow the event loop's clock or make a wait that never ends.
Timeout = Annotated[float, Field(gt=0, le=3600)]
Seconds = Annotated[float, Field(gt=0, le=7 * 86400)]
SecondsOrZero = Annotated[float, Field(ge=0, le=7 * 86400)]


class _Section(BaseModel):
    # .inf and .nan are valid YAML floats; no setting here means them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class StationConfig(_Section):
    """Who this hydrophone is; used in every event record and metric label."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    name: str = ""
    longitude: float = Field(default=0.0, ge=-180, le=180)
    latitude: float = Field(default=0.0, ge=-90, le=90)


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
    cpu_threads: int = Field(default=0, ge=0, le=1024)
    channels_last: bool = True
    fuse_batchnorm: bool = True
    max_batch_wait_s: Annotated[float, Field(ge=0, le=60)] = 0.25
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

    # A hop of nanoseconds means billions of windows per second of audio.
    window_s: Annotated[float, Field(ge=0.1, le=600)] = 2.0
    hop_s: Annotated[float, Field(ge=0.01, le=600)] = 1.0
    clip_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    local_threshold: float = Field(default=0.5, ge=0, le=1)
    global_threshold: int = Field(default=3, ge=1)
    encounter_gap_s: SecondsOrZero = 300.0

    @model_validator(mode="after")
    def _check_lengths(self) -> DetectionConfig:
        if self.hop_s > self.window_s:
            raise ValueError(f"hop_s ({self.hop_s}) must not exceed window_s ({self.window_s})")
        if self.clip_s < self.window_s:
            raise ValueError(f"clip_s ({self.clip_s}) must be at least window_s ({self.window_s})")
        return self


BackendName = Literal["orcahello-resnet", "transformers"]
ModelRole = Literal["primary", "shadow", "secondary"]


class RuleConfig(_Section):
    """One model's decision rule over its target-label window scores.

    ``per_second`` is OrcaHello's production rule (:mod:`listener.detection.rule`);
    ``mean_thresholded`` and ``mean_top_k`` are the file-level strategies of
    OrcaHello's newer inference code, applied per clip:

    * ``mean_thresholded``: windows scoring above ``local_threshold`` are
      positive; a detection needs ``global_threshold`` of them; confidence is
      100 x their mean;
    * ``mean_top_k``: confidence is 100 x the mean of the ``top_k`` highest
      window scores; a detection when that mean reaches ``top_k_threshold``.
    """

    strategy: Literal["per_second", "mean_thresholded", "mean_top_k"] = "per_second"
    local_threshold: float = Field(default=0.5, ge=0, le=1)
    global_threshold: int = Field(default=3, ge=1)
    top_k: int = Field(default=3, ge=1)
    top_k_threshold: float = Field(default=0.5, ge=0, le=1)


class ModelEntry(ModelConfig):
    """One model of ``models:``: a backend, its weights, windows, rule and role.

    Unset ``window_s``/``hop_s``/``rule`` fall back to the ``detection``
    section (for the ResNet) or to the backend's own defaults (3 s every 2 s
    for ``transformers``, as OrcaHello runs its transformer); unset
    ``target_labels`` means ``("call",)`` for the ResNet and every label except
    OrcaHello's negative ones for other backends.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9_.:/-]{1,128}$")
    backend: BackendName = "orcahello-resnet"
    role: ModelRole = "primary"
    target_labels: tuple[str, ...] | None = None
    window_s: Positive | None = None
    hop_s: Positive | None = None
    rule: RuleConfig | None = None

    @model_validator(mode="after")
    def _check_entry(self) -> ModelEntry:
        if "model_id" in self.model_fields_set:
            raise ValueError("set 'id' here, not 'model_id'")
        if self.window_s is not None and self.hop_s is not None and self.hop_s > self.window_s:
            raise ValueError(f"hop_s ({self.hop_s}) must not exceed window_s ({self.window_s})")
        if self.target_labels is not None and not self.target_labels:
            raise ValueError("target_labels must name at least one label")
        return self

    def model_config_view(self) -> ModelConfig:
        """This entry as the plain ``model`` section (what ``Scorer`` takes)."""
        fields = {k: getattr(self, k) for k in ModelConfig.model_fields if k != "model_id"}
        return ModelConfig(**fields, model_id=self.id)


class BufferConfig(_Section):
    """What happens when inference cannot keep up with the stream."""

    max_backlog_s: Seconds = 600.0


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
    models: tuple[ModelEntry, ...] | None = None

    @field_validator("models")
    @classmethod
    def _check_model_list(cls, models: tuple[ModelEntry, ...] | None
                          ) -> tuple[ModelEntry, ...] | None:
        if models is not None:
            _check_model_list(models)
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

    def model_entries(self) -> tuple[ModelEntry, ...]:
        """Every configured model; a single ``model:`` section is a list of one."""
        if self.models is not None:
            return self.models
        fields = {k: getattr(self.model, k) for k in ModelConfig.model_fields
                  if k != "model_id"}
        return (ModelEntry(**fields, id=self.model.model_id),)


def _check_model_list(models: tuple[ModelEntry, ...]) -> None:
    if not models:
        raise ValueError("models must list at least one model")
    seen: set[str] = set()
    for m in models:
        if m.id in seen:
            raise ValueError(f"two models have the id {m.id!r}; each id must be unique")
        seen.add(m.id)
    primaries = [m.id for m in models if m.role == "primary"]
    if len(primaries) != 1:
        raise ValueError(f"exactly one model must have role 'primary' (it emits detections), "
                         f"found {len(primaries)}: {primaries or 'none'}")


def default_config(station_id: str = "local") -> Config:
    """A config with every default, for ``listener detect`` without ``--config``."""
    return Config(station=StationConfig(id=station_id))


# A config is a few hundred nodes; more means aliases expanding exponentially.
_MAX_NODES = 100_000
_UNDEFINED_VAR = re.compile(r"\$(\{[^}]*\}?|[A-Za-z_][A-Za-z0-9_]*)")


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


def _line_index(node: yaml.Node, path: str, out: dict[tuple, int]) -> None:
    """Map each key path to its 1-based line; refuse duplicate keys, recursive
    aliases and alias bombs (each a ConfigError naming the line and key)."""
    seen = 0

    def walk(node: yaml.Node, prefix: tuple[str | int, ...], active: set[int]) -> None:
        nonlocal seen
        seen += 1
        key = ".".join(str(p) for p in prefix) or None
        line = node.start_mark.line + 1
        if id(node) in active:
            raise ConfigError("recursive YAML alias (an anchor that contains itself)",
                              path=path, line=line, key=key)
        if seen > _MAX_NODES:
            raise ConfigError(f"more than {_MAX_NODES} YAML nodes (aliases expanding "
                              "exponentially?)", path=path, line=line, key=key)
        children: list[tuple[tuple[str | int, ...], yaml.Node, int]] = []
        if isinstance(node, yaml.MappingNode):
            names: set[str] = set()
            for key_node, value_node in node.value:
                name = str(key_node.value)
                if name in names:
                    raise ConfigError(f"duplicate key {name!r} (YAML keeps only the last "
                                      "one; remove one of them)", path=path,
                                      line=key_node.start_mark.line + 1, key=key)
                names.add(name)
                children.append(((*prefix, name), value_node, key_node.start_mark.line + 1))
        elif isinstance(node, yaml.SequenceNode):
            children = [((*prefix, i), item, item.start_mark.line + 1)
                        for i, item in enumerate(node.value)]
        active.add(id(node))
        for child_path, child, child_line in children:
            out.setdefault(child_path, child_line)
            walk(child, child_path, active)
        active.discard(id(node))

    walk(node, (), set())


def _resolve_paths(data: dict[str, Any], base: Path, path: str) -> None:
    """Relative file paths in a config are relative to the config file.

    ``$VAR`` and ``${VAR}`` are expanded; an undefined one is an error (left
    as is, it would silently name a folder called ``${VAR}``).
    """

    def fix(section: dict[str, Any] | None, key: str) -> None:
        if isinstance(section, dict) and isinstance(section.get(key), str):
            expanded = os.path.expandvars(os.path.expanduser(section[key]))
            undefined = _UNDEFINED_VAR.search(expanded)
            if undefined:
                raise ConfigError(f"environment variable {undefined.group(0)} is not set "
                                  f"(in {section[key]!r})", path=path,
                                  key=f"{_section_name(data, section)}.{key}")
            p = Path(expanded)
            section[key] = str(p if p.is_absolute() else base / p)

    fix(data.get("model"), "weights")
    models = data.get("models")
    if isinstance(models, list):
        for entry in models:
            fix(entry, "weights")
    fix(data.get("state"), "dir")
    outputs = data.get("outputs")
    if isinstance(outputs, dict):
        fix(outputs.get("jsonl"), "path")
        fix(outputs.get("orcahello"), "dir")
        fix(outputs.get("clips"), "dir")
        fix(outputs.get("webhook"), "outbox_dir")
        fix(outputs.get("webhook"), "token_file")


def _section_name(data: dict[str, Any], section: dict[str, Any]) -> str:
    """Dotted name of a nested section (for error messages)."""
    for name, value in data.items():
        if value is section:
            return str(name)
        if isinstance(value, dict):
            for sub, inner in value.items():
                if inner is section:
                    return f"{name}.{sub}"
    return "?"


def parse_config(text: str, path: str = "<string>", base_dir: Path | None = None) -> Config:
    """Parse and validate YAML text; raise :class:`ConfigError` naming file:line key."""
    lines: dict[tuple, int] = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            # Checked before constructing: a recursive alias or an alias bomb
            # must be refused before it is expanded.
            _line_index(root, path, lines)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"not valid YAML: {getattr(err, 'problem', err)}", path=path,
                          line=line) from err
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections "
                          "(station, stream, model, ...)", path=path, line=1)
    if base_dir is not None:
        _resolve_paths(data, base_dir, path)
    try:
        cfg = Config.model_validate(data)
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
    # Checks that read the model folders (labels, config.json, installed
    # extras): imported late, the model package imports this module.
    from listener.model.backends.check import check_models

    return check_models(cfg, path=path, lines=lines)


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
        raw = p.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror or err}", path=str(p)) from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte {raw[err.start:err.start + 1]!r} at offset "
                          f"{err.start}); save the file as UTF-8", path=str(p),
                          line=line) from err
    return parse_config(text, path=str(p), base_dir=p.resolve().parent)
