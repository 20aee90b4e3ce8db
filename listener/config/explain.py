"""Pydantic's validation errors as one line: ``file:line: key: message``.

Every :class:`pydantic.ValidationError` met while reading a config goes
through :func:`config_error`, wherever it was raised (the sections'
validators, or a model built from them afterwards), so a user never sees a
pydantic traceback. An unknown key gets the closest known name of its
section as a suggestion (``did you mean 'poll_interval_s'?``).
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from listener.config.origin import ConfigOrigin
from listener.errors import ConfigError


def config_error(err: ValidationError, origin: ConfigOrigin, model: type[BaseModel],
                 prefix: tuple[str | int, ...] = ()) -> ConfigError:
    """The first problem of ``err`` as a ConfigError naming the file, line and key.

    ``model`` is the class that was validated (for the known names of a
    section); ``prefix`` its place in the file when it is not the whole config.
    """
    first = err.errors()[0]
    # Pydantic adds entries such as 'function-after[...]' that are not keys.
    loc = (*prefix, *(p for p in first["loc"] if not (isinstance(p, str) and "[" in p)))
    if first["type"] == "invalid_key" and loc:
        loc = loc[:-1]  # the bad key itself (a bool or number): name its section
    key = ".".join(_key_text(p) for p in loc) or None
    message = _explain(first, err.error_count(), _known_names(model, loc[len(prefix):-1]))
    return ConfigError(message, path=origin.path, line=origin.line_of(loc) if loc else None,
                       key=key)


def _explain(error: Any, count: int, known: Sequence[str] | None) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        msg = "unknown key (not allowed here; config/example.yaml lists every allowed key)"
        name = str(error["loc"][-1]) if error["loc"] else ""
        close = difflib.get_close_matches(name, known or (), n=1, cutoff=0.6)
        if close:
            msg = f"unknown key; did you mean {close[0]!r}? (config/example.yaml lists " \
                  f"every allowed key)"
    elif kind == "missing":
        msg = "required key is missing"
    elif kind == "value_error":
        # Our validators' messages already quote the bad value.
        msg = str(error["msg"]).removeprefix("Value error, ")
    elif kind == "invalid_key":
        bad = error.get("input")
        msg = f"a key must be a name, got {_short(bad)}"
        if isinstance(bad, bool):
            msg += " (YAML reads on, off, yes, no, true and false as booleans: quote the key, " \
                   "e.g. 'on':)"
        else:
            msg += " (quote the key)"
    elif kind == "literal_error":
        msg = f"{error['msg']}, got {_short(error.get('input'))}"
    else:
        msg = f"{error['msg']} (got {_short(error.get('input'))})"
    if count > 1:
        msg += f" [and {count - 1} more problem(s)]"
    return msg


def _key_text(part: str | int) -> str:
    """A key as the error names it: control characters escaped, so it stays one line."""
    text = str(part)
    if not text.isprintable():
        text = repr(text)[1:-1]
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _short(value: Any) -> str:
    """``repr`` of a bad value, cut so a 10,000-character one stays one readable line."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _known_names(model: type[BaseModel], loc: Sequence[str | int]) -> list[str] | None:
    """The field names of the section at ``loc`` (list indexes skipped), if it is one."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue  # an element of a list: the same section type
        field = current.model_fields.get(part) if current is not None else None
        current = _model_in(field.annotation) if field is not None else None
        if current is None:
            return None
    return list(current.model_fields) if current is not None else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The section class inside ``X | None``, ``tuple[X, ...]`` and the like."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
