"""The systemd notify protocol (``sd_notify(3)``) without dependencies.

Under ``Type=notify`` systemd hands the service a datagram socket in
``NOTIFY_SOCKET``; the service sends ``READY=1`` once it works, ``STATUS=...``
for ``systemctl status``, ``STOPPING=1`` on shutdown and, with
``WatchdogSec=``, ``WATCHDOG=1`` more often than ``WATCHDOG_USEC``. Outside
systemd every call is a no-op, so the daemon needs no special case.

Only the watchdog honours ``WATCHDOG_PID``: as in ``sd_watchdog_enabled(3)``,
a watchdog meant for another process (a parent shell) is not ours to feed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends state changes to systemd; every method is a no-op outside it.

    Args:
        environ: where to read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and
            ``WATCHDOG_PID`` (default ``os.environ``).
        pid: our process id (default ``os.getpid()``), compared to ``WATCHDOG_PID``.
    """

    def __init__(self, environ: Mapping[str, str] | None = None,
                 pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _parse_socket(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = _parse_watchdog(env, os.getpid() if pid is None else pid)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when running under systemd with a usable notify socket."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half of ``WATCHDOG_USEC``; None if off."""
        if self._address is None or self._watchdog_usec is None:
            return None
        # systemd's own advice: ping at half the timeout so one late tick is harmless.
        return self._watchdog_usec / 2 / 1_000_000

    def ready(self) -> bool:
        """Tell systemd start-up finished (``READY=1``)."""
        return self.notify("READY=1")

    def stopping(self) -> bool:
        """Tell systemd shutdown has begun (``STOPPING=1``)."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status``."""
        # A newline would start a new KEY=VALUE assignment in the datagram.
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        """Feed the watchdog (``WATCHDOG=1``); a no-op when it is off or not ours."""
        if self.watchdog_interval_s is None:
            return False
        return self.notify("WATCHDOG=1")

    def notify(self, message: str) -> bool:
        """Send one raw datagram; True if sent. Errors are logged once, never raised."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                # Never stall the event loop on a full systemd queue; a lost
                # status line is better than a frozen daemon.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message.encode("utf-8"), self._address)
        except OSError as err:
            if not self._warned:
                self._warned = True
                logger.warning("cannot notify systemd at %r: %s (further errors at debug level)",
                               self._address, err)
            else:
                logger.debug("cannot notify systemd: %s", err)
            return False
        return True

    def close(self) -> None:
        """Close the socket; later calls reopen it."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _parse_socket(value: str) -> str | None:
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    # e.g. vsock: addresses; not used for a daemon on the host.
    logger.warning("unsupported NOTIFY_SOCKET %r; systemd notifications disabled", value)
    return None


def _parse_watchdog(env: Mapping[str, str], pid: int) -> int | None:
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    try:
        usec = int(raw)
    except ValueError:
        logger.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != pid:
                logger.debug("watchdog belongs to pid %s, not %s", owner, pid)
                return None
        except ValueError:
            logger.warning("ignoring watchdog: WATCHDOG_PID=%r is not a pid", owner)
            return None
    return usec


async def watchdog_loop(notifier: SystemdNotifier, healthy: Callable[[], bool],
                        stop: asyncio.Event) -> None:
    """Feed the watchdog every interval while ``healthy()`` holds, until ``stop``.

    While ``healthy()`` is false (or raises) no ping is sent, so a wedged
    pipeline, one whose event loop still runs, is killed and restarted by
    systemd after ``WatchdogSec``. Returns at once when the watchdog is off.
    """
    interval = notifier.watchdog_interval_s
    if interval is None:
        logger.debug("systemd watchdog not enabled; watchdog loop not started")
        return
    was_healthy = True
    while not stop.is_set():
        try:
            ok = bool(healthy())
        except Exception:
            logger.exception("watchdog health check raised; treating as unhealthy")
            ok = False
        if ok:
            notifier.watchdog()
        if ok != was_healthy:
            # Log transitions only: one line per incident, not one per tick.
            if ok:
                logger.info("pipeline healthy again; feeding the systemd watchdog")
            else:
                logger.warning("pipeline unhealthy; withholding systemd watchdog pings")
            was_healthy = ok
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            pass
