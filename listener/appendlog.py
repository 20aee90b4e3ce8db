"""Append-only text files that survive log rotation: the one way listener appends lines.

:class:`AppendFile` keeps a descriptor open between writes (an fsync per
record is the cost that matters, not an open), and before each write
compares the path's ``st_dev``/``st_ino`` with the open descriptor's, as
:class:`logging.handlers.WatchedFileHandler` does. When logrotate renamed
the file (``mv events.jsonl events.jsonl.1``) or someone deleted it, the
next record goes to a new file at the path, not to the renamed or unlinked
inode, and a WARNING says so once per reopen.

Each record is written whole (a loop over ``os.write`` on an ``O_APPEND``
descriptor), flushed to disk with ``fsync``, and cut back off the file if
the write failed part way (a full disk), so a retry appends a whole line
where the failed one began; every writer of the path appends under an
``flock`` of it, so that cut never takes another writer's line. A file whose
last line is incomplete (a crash mid-write) gets a newline first, so the torn
line does not swallow the next.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


class AppendFile:
    """One append-only file, reopened by path after a rename or a deletion.

    Args:
        path: the file; its folder is created on the first write.
        fsync: make each record durable before :meth:`append` returns.

    Thread-safe: records from several threads never interleave.
    """

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self._fsync = fsync
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.reopened = 0  # times the path was found rotated or deleted

    def append(self, data: bytes) -> None:
        """Append ``data`` (whole lines, ending with a newline) and make it durable.

        Raises:
            OSError: the folder or file cannot be made or written; nothing of
                ``data`` is left in the file (as far as the filesystem allows).
        """
        with self._lock:
            fd = self._current()
            # Other AppendFiles on this path (stations of this process sharing an
            # output, or another process) append under the same lock, so cutting
            # a failed record back off never cuts a record of theirs.
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                self._write_locked(fd, data)
            finally:
                if self._fd == fd:  # a failed write closed it, which unlocked it
                    fcntl.flock(fd, fcntl.LOCK_UN)

    def _write_locked(self, fd: int, data: bytes) -> None:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self._fsync:
                os.fsync(fd)
        except OSError:
            # A full disk may have taken part of the record: cut it off.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            self._close_locked()
            raise

    def close(self) -> None:
        """Close the descriptor (the next :meth:`append` opens the path again)."""
        with self._lock:
            self._close_locked()

    def __enter__(self) -> AppendFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _current(self) -> int:
        """The open descriptor of the file now at the path (reopened if it moved)."""
        if self._fd is not None and self._moved(self._fd):
            log.warning("%s was renamed or deleted (log rotation?); reopening the path, "
                        "later records go to a new file there", self.path)
            self.reopened += 1
            self._close_locked()
        if self._fd is None:
            self._fd = self._open()
        return self._fd

    def _moved(self, fd: int) -> bool:
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False  # cannot tell (permissions): keep writing where we were
        mine = os.fstat(fd)
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, _FLAGS, 0o666)
        try:
            size = os.lseek(fd, 0, os.SEEK_END)
            if size and os.pread(fd, 1, size - 1) != b"\n":
                log.warning("%s: last line is incomplete (crash?); leaving it, appending "
                            "on a new line", self.path)
                os.write(fd, b"\n")
        except OSError:
            os.close(fd)
            raise
        return fd

    def _close_locked(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                log.warning("%s: error closing", self.path, exc_info=True)
