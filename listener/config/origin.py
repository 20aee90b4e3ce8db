"""Where a loaded config came from, so a later check can name the file and the line.

:func:`listener.config.load_config` records the file and each key's line on
the :class:`~listener.config.Config` it returns; the start-up checks
(:mod:`listener.runtime.preflight`) then report ``file:line: key: message``
exactly as a validation error does, in ``check-config`` and in ``run``.
The record survives ``model_copy`` and is not part of the config's value:
two configs that differ only in where they were read compare equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from listener.errors import ConfigError
from listener.numerals import ascii_int

Lines = Mapping[tuple[str | int, ...], int]


class ConfigOrigin:
    """A config file's path and the 1-based line of each key path."""

    __slots__ = ("lines", "path")

    def __init__(self, path: str | None, lines: Lines | None = None) -> None:
        self.path = path
        self.lines: Lines = lines or {}

    def line_of(self, key: str | tuple[str | int, ...]) -> int | None:
        """The line of ``key`` (dotted or a tuple), else of its nearest parent."""
        parts = tuple(_index(p) for p in (key.split(".") if isinstance(key, str) else key))
        for n in range(len(parts), 0, -1):
            if parts[:n] in self.lines:
                return self.lines[parts[:n]]
        return None

    def error(self, message: str, key: str) -> ConfigError:
        """A :class:`ConfigError` for ``key``, located in this file."""
        return ConfigError(message, path=self.path, line=self.line_of(key), key=key)

    # Not part of the config's value (pydantic compares private attributes).
    def __eq__(self, other: object) -> bool:
        return other is None or isinstance(other, ConfigOrigin)

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"ConfigOrigin({self.path!r})"


def origin_of(cfg: Any) -> ConfigOrigin:
    """The origin recorded on ``cfg`` (an unlocated one for a config built in code)."""
    found = getattr(cfg, "_origin", None)
    return found if isinstance(found, ConfigOrigin) else ConfigOrigin(None)


def set_origin(cfg: Any, origin: ConfigOrigin) -> None:
    """Record ``origin`` on ``cfg`` (a private attribute: allowed on a frozen model)."""
    cfg._origin = origin


def _index(part: str | int) -> str | int:
    """A key path's part: list indices written as digits become ints."""
    if isinstance(part, str):
        number = ascii_int(part)
        return part if number is None else number
    return part
