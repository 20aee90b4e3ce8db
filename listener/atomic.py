"""Atomic file replacement: the one way listener writes a file that must never be half-written.

Readers (a restarted daemon, a watcher uploading a folder, another replay)
see the old file or the whole new one. The temporary file lives beside the
target (same filesystem, so the rename is atomic) and starts with a dot so
folder scans skip it; the folder is fsynced after the rename so the rename
itself survives a power cut.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (no-op where directories can't be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename still happened
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | Callable[[Path], None]) -> None:
    """Write ``path`` so readers see the old file or the whole new one, never half.

    ``data`` is the bytes, or a function that writes a file at the path it is
    given (e.g. ``soundfile.write``, ``safetensors.torch.save_file``).

    Raises:
        OSError: the folder cannot be made or the file written (the temporary
            file is removed; the old file, if any, is untouched).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if callable(data):
            # The mode any new file gets here (the umask's), kept whatever the writer
            # does: safetensors' save_file makes its files 0600, which a daemon running
            # as another user (systemd, docs/operations.md) could not read.
            tmp.unlink(missing_ok=True)  # a crashed write's leftover keeps its mode
            tmp.touch()
            mode = tmp.stat().st_mode & 0o777
            data(tmp)
            os.chmod(tmp, mode)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
