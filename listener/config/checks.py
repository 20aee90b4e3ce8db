"""Checks of a config against this machine: folders writable, outputs of the right kind, port free.

Validation (:mod:`listener.config.loading`) says whether a config makes
sense; these say whether it can run *here*. Each raises a
:class:`~listener.errors.ConfigError` naming the file, line and key
(:mod:`listener.config.origin`). They create nothing: a folder that does not
exist yet passes when the nearest existing folder above it is writable
(``run`` creates it). :func:`listener.runtime.preflight.preflight` runs them,
for ``check-config`` and at the start of ``run``.
"""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from listener.config.origin import origin_of
from listener.config.sections import Config
from listener.errors import ConfigError

NO_STREAM = "the config has no 'stream' section; `listener run` needs one (see config/example.yaml)"


def check_stream(cfg: Config) -> None:
    """``run`` follows a live stream: the section must be there."""
    if cfg.stream is None:
        raise origin_of(cfg).error(NO_STREAM, "stream")


def check_folders(cfg: Config) -> None:
    """The state folder and every output folder writable; a file output not a folder."""
    origin = origin_of(cfg)
    _writable_folder(Path(cfg.state.dir), "state.dir", cfg)
    out = cfg.outputs
    if out.jsonl is not None:
        path = Path(out.jsonl.path)
        if path.is_dir():
            raise origin.error(f"{path} is a folder; name the file to append to, e.g. "
                               f"{path / 'events.jsonl'}", "outputs.jsonl.path")
        _writable_folder(path.parent, "outputs.jsonl.path", cfg)
    folders = [("outputs.orcahello.dir", out.orcahello.dir if out.orcahello else None),
               ("outputs.clips.dir", out.clips.dir if out.clips else None),
               ("outputs.webhook.outbox_dir", out.webhook.outbox_dir if out.webhook else None)]
    for key, folder in folders:
        if folder is not None:
            _writable_folder(Path(folder), key, cfg)


def _writable_folder(folder: Path, key: str, cfg: Config) -> None:
    origin = origin_of(cfg)
    if folder.exists() and not folder.is_dir():
        raise origin.error(f"{folder} is a file, not a folder", key)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise origin.error(f"cannot create {folder}: {existing} is a file", key)
    try:
        # A real write (then gone): permission bits say nothing for root, or
        # on a read-only mount.
        with tempfile.TemporaryFile(dir=existing, prefix=".listener-check-"):
            pass
    except OSError as err:
        what = folder if existing == folder else f"{folder} (in {existing})"
        raise origin.error(f"cannot write {what}: {err.strerror or err}", key) from err


def check_port(cfg: Config) -> None:
    """The metrics port can be bound (skipped when disabled or port 0, any free one)."""
    m = cfg.metrics
    if not m.enabled or m.port == 0:
        return
    try:
        addresses = socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)
        for family, kind, proto, _name, address in addresses:
            with socket.socket(family, kind, proto) as s:
                # As the server binds (asyncio sets SO_REUSEADDR on POSIX).
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(address)
    except OSError as err:  # in use, unresolvable, not an address of this host
        raise port_error(cfg, err) from err


def port_error(cfg: Config, err: OSError) -> ConfigError:
    """The message the server gives for a port it cannot bind."""
    m = cfg.metrics
    return origin_of(cfg).error(f"cannot serve metrics on {m.host}:{m.port}: "
                                f"{err.strerror or err}", "metrics.host/metrics.port")
