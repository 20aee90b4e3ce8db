"""Everything ``run`` checks before it loads a network, in one place: ``check-config`` runs it too.

:func:`preflight` is the one list of start-up checks: a stream section, the
state folder and every output writable (a file output not a folder), the
model's device and precision usable here, each ResNet's weights a readable
checkpoint of a known layout (names read, no network built), the metrics
port free. ``listener check-config`` calls it; :func:`start_checks` calls it
at the start of a daemon or fleet and then takes the state folder's lock
(:mod:`listener.runtime.statelock`). Both report the same ``file:line: key: message``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from listener.config import Config
from listener.config.checks import check_folders, check_port, check_stream
from listener.config.origin import origin_of
from listener.errors import ConfigError, ListenerError, ModelLoadError
from listener.runtime.statelock import StateLock, acquire, holder, lock_files

log = logging.getLogger(__name__)

#: Scorer's refusal without weights, as a message for the ``model.weights`` key.
WEIGHTS_REQUIRED = ("required: the path of a .safetensors or .pt file (convert a fastai "
                    "model.pkl with `listener convert-fastai`)")


def preflight(cfg: Config, *, stream: bool = True, weights: bool = True,
              port: bool = True, running_ok: bool = False) -> list[str]:
    """Run every start-up check of ``cfg``; the notes worth printing.

    Args:
        stream: require a ``stream`` section (replay and tests hand in a source).
        weights: check the device, precision and weights (False when the
            caller brings its own model, or the demo's random one).
        port: check the metrics port.
        running_ok: a port held by the listener that holds this config's
            state folder is a note, not an error (``check-config`` beside the
            running service).

    Raises:
        ConfigError: the first problem, naming the file, line and key.
    """
    notes: list[str] = []
    if stream:
        check_stream(cfg)
    check_folders(cfg)
    if weights:
        check_model(cfg)
    if port:
        try:
            check_port(cfg)
        except ConfigError as err:
            pid = holder(p for _key, p in lock_files(cfg)) if running_ok else None
            if pid is None:
                raise
            notes.append(f"{err} (the listener with PID {pid} holding this state folder "
                         f"serves it)")
    return notes


def check_model(cfg: Config) -> None:
    """Device, precision and every ResNet's weights, as the model load will meet them."""
    from listener.model.inspect import inspect_checkpoint
    from listener.model.precision import plan_execution
    from listener.model.scorer import select_device

    origin = origin_of(cfg)
    m = cfg.model
    try:
        device = select_device(m.device)
    except ModelLoadError as err:
        raise origin.error(str(err), "model.device") from err
    try:
        plan_execution(m.precision, device, fuse_batchnorm=m.fuse_batchnorm,
                       channels_last=m.channels_last, float32_stages=m.float32_stages)
    except ModelLoadError as err:
        raise origin.error(str(err), "model.precision") from err
    entries = cfg.model_entries()
    for i, entry in enumerate(entries):
        if entry.backend != "orcahello-resnet":
            continue  # its folder was read when the config loaded (backends.check)
        key = f"models.{i}.weights" if cfg.models is not None else "model.weights"
        if entry.weights is None:
            raise origin.error(WEIGHTS_REQUIRED, key)
        try:
            inspect_checkpoint(entry.weights, entry.architecture)
        except ModelLoadError as err:
            raise origin.error(str(err), key) from err


def start_checks(configs: Sequence[Config], *, stream: bool = True, weights: bool = True,
                 keep_going: bool = False) -> StateLock:
    """At the start of ``run``: :func:`preflight` for each station, then the locks.

    The first config's metrics port is checked (a fleet serves there). With
    ``keep_going`` a station's failed check is logged, and its start fails
    later as it would have; the lock is always required.

    Returns:
        The held locks: release them when the daemon stops (``with``).

    Raises:
        ListenerError: a check failed, or another listener holds a lock (PID).
    """
    for cfg in configs:
        try:
            preflight(cfg, stream=stream, weights=weights, port=False)
        except ListenerError as err:
            if not keep_going:
                raise
            log.error("station %s: %s", cfg.station.id, err)
    lock = acquire(configs)
    try:
        if configs:
            check_port(configs[0])
    except BaseException:
        lock.release()
        raise
    return lock
