"""One listener per state folder: an exclusive lock, taken at start, naming its holder.

Two daemons on one state folder (a second ``systemctl start`` under another
name, a test run beside the service) would both append every event to the
same ``events.jsonl`` and overwrite each other's resume state. At start,
:func:`acquire` takes ``fcntl.flock`` locks on ``<state.dir>/listener.lock``
and on a lock file beside each appended output of the configs (the
JSON-lines file, the webhook outbox), and writes its PID into them; a second
process is refused with a message naming the holder's PID.

The kernel drops a ``flock`` when its holder exits, even on SIGKILL, so a
crashed daemon never leaves a stale lock; the file itself stays (removing it
would race with a process opening it).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from listener.config import Config
from listener.errors import ListenerError
from listener.numerals import ascii_int

log = logging.getLogger(__name__)

STATE_LOCK_NAME = "listener.lock"


class StateLockError(ListenerError):
    """Another process holds the lock of a state folder or an output."""


def lock_files(cfg: Config) -> list[tuple[str, Path]]:
    """The lock files a config's daemon holds, each with the key it protects."""
    out = [("state.dir", Path(cfg.state.dir) / STATE_LOCK_NAME)]
    jsonl = cfg.outputs.jsonl
    if jsonl is not None:
        out.append(("outputs.jsonl.path", _beside(Path(jsonl.path))))
    hook = cfg.outputs.webhook
    if hook is not None and hook.outbox_dir is not None:
        out.append(("outputs.webhook.outbox_dir", _beside(Path(hook.outbox_dir))))
    return out


def _beside(path: Path) -> Path:
    # Beside, not inside: an outbox folder's scan and logrotate's globs skip it.
    return path.with_name(f".{path.name}.lock")


class StateLock:
    """The locks one process holds; :meth:`release` (or leaving ``with``) lets go."""

    def __init__(self) -> None:
        self._held: dict[Path, int] = {}

    @property
    def paths(self) -> list[Path]:
        """The lock files held."""
        return list(self._held)

    def take(self, key: str, path: Path) -> None:
        """Lock ``path`` (once per file, however many configs name it)."""
        real = path.parent.resolve() / path.name
        if real in self._held:
            return
        try:
            real.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(real, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as err:
            raise StateLockError(f"{key}: cannot create the lock file {real}: "
                                 f"{err.strerror or err}") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"PID {pid}" if pid is not None else "a process that has not written its PID"
            raise StateLockError(
                f"{key}: {real.parent} is in use by another listener ({who}, lock file "
                f"{real}); stop that one first, or give this one its own {key}") from err
        self._held[real] = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as err:  # a full disk: the lock holds, only the PID is unsaid
            log.warning("%s: locked, but cannot write this PID into it: %s", real,
                        err.strerror or err)

    def release(self) -> None:
        """Unlock and close every lock file (they stay on disk)."""
        for fd in self._held.values():
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held.clear()

    def __enter__(self) -> StateLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def acquire(configs: Sequence[Config] | Config) -> StateLock:
    """Lock the state folder and appended outputs of every config, or refuse.

    Stations of one process may share a folder (each is locked once).

    Raises:
        StateLockError: one is held by another process (its PID in the message);
            nothing stays locked.
    """
    lock = StateLock()
    try:
        for cfg in [configs] if isinstance(configs, Config) else configs:
            for key, path in lock_files(cfg):
                lock.take(key, path)
    except BaseException:
        lock.release()
        raise
    log.debug("holding %s", ", ".join(str(p) for p in lock.paths))
    return lock


def holder(paths: Iterable[Path]) -> int | None:
    """The PID of a live process holding any of ``paths`` (lock files), else None."""
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _read_pid(fd) or -1
        finally:
            os.close(fd)  # also drops the shared lock if it was taken
    return None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return ascii_int(text)
