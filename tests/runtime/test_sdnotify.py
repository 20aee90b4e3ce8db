"""listener.runtime.sdnotify against real AF_UNIX datagram sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.runtime.sdnotify import SystemdNotifier, watchdog_loop


@pytest.fixture
def listener_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound in a tmp dir, as systemd's notify socket is."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield sock, str(path)
    sock.close()


def recv_all(sock: socket.socket) -> list[bytes]:
    """Every datagram already queued on ``sock``."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096))
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2)
    return out


def test_messages_are_the_exact_datagrams(listener_socket: tuple[socket.socket, str]) -> None:
    sock, path = listener_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    assert n.enabled
    assert n.watchdog_interval_s == 1.0
    assert n.ready() and n.status("scoring rpi_orcasound_lab\nlag 3s")
    assert n.watchdog() and n.stopping()
    assert [sock.recv(4096) for _ in range(4)] == [
        b"READY=1", b"STATUS=scoring rpi_orcasound_lab lag 3s", b"WATCHDOG=1", b"STOPPING=1"]
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"listener-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert sock.recv(4096) == b"READY=1"
        n.close()
    finally:
        sock.close()


def test_noop_outside_systemd() -> None:
    n = SystemdNotifier({})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    assert not n.ready() and not n.status("x") and not n.watchdog() and not n.stopping()


def test_watchdog_pid_of_another_process_disables_only_the_watchdog(
        listener_socket: tuple[socket.socket, str]) -> None:
    sock, path = listener_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    n = SystemdNotifier(env, pid=os.getpid())
    assert n.watchdog_interval_s is None
    assert not n.watchdog()
    assert n.ready()
    assert recv_all(sock) == [b"READY=1"]
    mine = SystemdNotifier({**env, "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval_s == 0.5


def test_send_errors_are_logged_once_never_raised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert n.enabled
    with caplog.at_level("DEBUG", logger="listener.runtime.sdnotify"):
        assert not n.ready()
        assert not n.status("x")
        assert not n.stopping()
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "cannot notify systemd" in warnings[0].getMessage()


def test_bad_environment_is_ignored() -> None:
    assert SystemdNotifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False
    n = SystemdNotifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "soon"})
    assert n.watchdog_interval_s is None


def test_watchdog_loop_pings_at_the_interval_and_stops_when_unhealthy(
        listener_socket: tuple[socket.socket, str]) -> None:
    sock, path = listener_socket
    # WATCHDOG_USEC 100 ms -> a ping every 50 ms.
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    health = {"ok": True}

    async def main() -> tuple[int, int, int, float]:
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(watchdog_loop(n, lambda: health["ok"], stop))
        await asyncio.sleep(0.525)  # healthy: pings at 0, 50, ..., 500 ms
        healthy_pings = len(recv_all(sock))
        health["ok"] = False
        await asyncio.sleep(0.3)
        unhealthy_pings = len(recv_all(sock))
        health["ok"] = True
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 1)
        elapsed = time.monotonic() - started
        return healthy_pings, unhealthy_pings, len(recv_all(sock)), elapsed

    healthy, unhealthy, recovered, elapsed = asyncio.run(main())
    assert 8 <= healthy <= 12, healthy  # ~11 ideally; slack for a loaded CI host
    assert unhealthy <= 1, unhealthy  # at most the tick that raced the flip
    assert recovered >= 2, recovered
    assert elapsed < 2  # stop is prompt, not one interval late
    n.close()


def test_watchdog_loop_returns_at_once_when_disabled() -> None:
    async def main() -> None:
        await asyncio.wait_for(watchdog_loop(SystemdNotifier({}), lambda: True,
                                             asyncio.Event()), 1)

    asyncio.run(main())


def test_watchdog_loop_treats_a_raising_check_as_unhealthy(
        listener_socket: tuple[socket.socket, str]) -> None:
    sock, path = listener_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})

    def broken() -> bool:
        raise RuntimeError("boom")

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(watchdog_loop(n, broken, stop))
        await asyncio.sleep(0.15)
        stop.set()
        await task

    asyncio.run(main())
    assert recv_all(sock) == []
    n.close()
