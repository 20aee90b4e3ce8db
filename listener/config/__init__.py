"""Typed station configuration: one YAML file per hydrophone.

Every section is a pydantic model that rejects unknown keys. Defaults are the
production OrcaHello settings (``config/example.yaml`` documents every field).
Errors name the file, the line and the dotted key, and say what is allowed.
Secrets (webhook tokens) never live in YAML: the config names an environment
variable or a credentials file that holds them.

``sections`` holds the models, ``outputs`` the sinks' sections, ``loading``
the YAML reading; everything public is importable from here.
"""

from listener.config.loading import load_config, parse_config
from listener.config.models import (
    PRECISIONS,
    ModelConfig,
    ModelEntry,
    Precision,
    RuleConfig,
)
from listener.config.origin import ConfigOrigin, origin_of
from listener.config.outputs import (
    ClipSinkConfig,
    JsonlSinkConfig,
    OrcaHelloSinkConfig,
    OutputsConfig,
    WebhookSinkConfig,
)
from listener.config.sections import (
    BufferConfig,
    Config,
    DetectionConfig,
    FetchConfig,
    FrontendConfig,
    HttpLimitsConfig,
    LoggingConfig,
    MetricsConfig,
    StateConfig,
    StationConfig,
    StreamConfig,
    check_node_name,
    default_config,
    with_every_model,
    with_precision,
)

__all__ = [
    "PRECISIONS",
    "BufferConfig",
    "ClipSinkConfig",
    "Config",
    "ConfigOrigin",
    "DetectionConfig",
    "FetchConfig",
    "FrontendConfig",
    "HttpLimitsConfig",
    "JsonlSinkConfig",
    "LoggingConfig",
    "MetricsConfig",
    "ModelConfig",
    "ModelEntry",
    "OrcaHelloSinkConfig",
    "OutputsConfig",
    "Precision",
    "RuleConfig",
    "StateConfig",
    "StationConfig",
    "StreamConfig",
    "WebhookSinkConfig",
    "check_node_name",
    "default_config",
    "load_config",
    "origin_of",
    "parse_config",
    "with_every_model",
    "with_precision",
]
