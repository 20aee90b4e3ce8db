"""Reading a station config: YAML checked before it is expanded, then validated.

Duplicate keys, recursive aliases and alias bombs are refused before PyYAML
builds anything; ``${VAR}`` must be defined; relative paths resolve against
the file's folder; a validation error names the file, the line and the
dotted key (:class:`~listener.errors.ConfigError`).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from listener.config.explain import config_error
from listener.config.origin import ConfigOrigin, set_origin
from listener.config.sections import Config, StateConfig, rule_units
from listener.errors import ConfigError

log = logging.getLogger(__name__)


# A config is a few hundred nodes; more means aliases expanding exponentially.
_MAX_NODES = 100_000
_UNDEFINED_VAR = re.compile(r"\$(\{[^}]*\}?|[A-Za-z_][A-Za-z0-9_]*)")


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
    # Left out, state.dir defaults to the same place relative to this file as
    # when written out, not to the working directory.
    state = data.setdefault("state", {})
    if isinstance(state, dict):
        state.setdefault("dir", str(StateConfig.model_fields["dir"].default))
    fix(state, "dir")
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
    except (ValueError, OverflowError, RecursionError) as err:
        # PyYAML's constructors raise these for values it recognised but cannot
        # build (a timestamp such as 2001-02-30); it keeps no line for them.
        raise ConfigError(f"not valid YAML: {err}", path=path) from err
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping of sections "
                          "(station, stream, model, ...)", path=path, line=1)
    if base_dir is not None:
        _resolve_paths(data, base_dir, path)
    origin = ConfigOrigin(path, lines)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        # Raised by a validator or by a section built from validated ones:
        # either way one line naming the key, never a pydantic traceback.
        raise config_error(err, origin, Config) from err
    _check_reachable(cfg, origin)
    # Checks that read the model folders (labels, config.json, installed
    # extras) run where the models are planned (listener.model.backends.check),
    # which names file and line through this origin.
    set_origin(cfg, origin)
    return cfg


def _check_reachable(cfg: Config, origin: ConfigOrigin) -> None:
    """Refuse a ``global_threshold`` no clip can reach (it would never fire)."""
    det = cfg.detection
    units = rule_units(det.clip_s, det.window_s, det.hop_s)
    if det.global_threshold > units:
        raise origin.error(f"{det.global_threshold} can never be reached: a clip of "
                           f"{det.clip_s:g} s has {units} units of hop_s ({det.hop_s:g} s) "
                           f"to count", "detection.global_threshold")


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
