"""The console's memory and descriptors in subprocesses: eight viewers, 1,100 idle sockets."""

from __future__ import annotations

import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

PROCESS = Path(__file__).resolve().parents[1] / "support" / "console_process.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.mark.slow
def test_eight_live_viewers_cost_under_100_mb(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(PROCESS), "console", str(port), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(1.0)
        base = status_kb(proc.pid, "VmRSS")
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)
        counts: list[int] = []

        def watch() -> None:
            n = 0
            with requests.get(f"http://127.0.0.1:{port}/api/live", stream=True,
                              timeout=30) as r:
                for line in r.iter_lines():
                    n += line.startswith(b"data: ")
                    if n == 6:
                        break
            counts.append(n)

        threads = [threading.Thread(target=watch) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        peak = status_kb(proc.pid, "VmHWM")
    finally:
        proc.kill()
        proc.wait()
    assert counts == [6] * 8
    assert (peak - base) / 1024 < 100, f"RSS {base / 1024:.0f} MB, peak {peak / 1024:.0f} MB"


@pytest.mark.slow
def test_1100_idle_connections_leave_a_daemon_at_1024_descriptors_serving(
        tmp_path: Path) -> None:
    from support.daemon_support import station_config, tone_recording, ts_segments
    from support.hls_server import LiveHlsServer

    from listener.config import MetricsConfig

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"this test opens 1,100 sockets; the hard descriptor limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard) if hard > 0 else 4096, hard))
    segments = ts_segments(tone_recording(tmp_path / "t.wav", 120.0, []), tmp_path / "hls")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    with LiveHlsServer() as hls:
        hls.start_folder("rpi_fd", 1_600_000_000)
        rest = iter(segments)
        for _ in range(2):
            hls.publish("rpi_fd", *next(rest))
        cfg = station_config(hls.base_url, "rpi_fd", tmp_path,
                             metrics=MetricsConfig(host="127.0.0.1", port=port))
        proc = subprocess.Popen(
            [sys.executable, str(PROCESS), "daemon", json.dumps(cfg.model_dump(mode="json"))],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
        try:
            deadline = time.monotonic() + 60
            while fetched(url) < 2 and time.monotonic() < deadline:
                assert proc.poll() is None
                time.sleep(0.2)
            assert fetched(url) >= 2
            baseline = len(list(Path(f"/proc/{proc.pid}/fd").iterdir()))
            flood = threading.Thread(target=hold_idle, args=(port, 1100, stop), daemon=True)
            flood.start()
            time.sleep(1.0)
            before = fetched(url)
            for _ in range(4):  # the stream goes on while the sockets are held
                hls.publish("rpi_fd", *next(rest))
                r = requests.get(url + "/healthz", timeout=3)
                assert r.status_code == 200 and r.text == "ok\n"
                time.sleep(1.0)
            deadline = time.monotonic() + 20
            while fetched(url) < before + 3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert fetched(url) >= before + 3
            # About max_connections (256, a quarter of 1,024) of them are the flood's, plus
            # those accepted since the last sweep, which a loaded host makes late: far from
            # the limit either way (the code before the cap held about 855).
            held = len(list(Path(f"/proc/{proc.pid}/fd").iterdir()))
            assert held <= baseline + 600, (baseline, held, _fd_kinds(proc.pid))
        finally:
            stop.set()
            proc.terminate()
            out = proc.communicate(timeout=60)[0]
    assert "out of system resource" not in out and "Traceback" not in out, out[-3000:]
    assert "evicted at the cap" in out  # reported once, not once per connection
    assert out.count("HTTP clients refused") <= 2


def hold_idle(port: int, count: int, stop: threading.Event) -> None:
    """Keep ``count`` idle connections open to ``port``: each one closed is opened again."""
    sel = selectors.DefaultSelector()

    def open_one() -> None:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_READ)

    for _ in range(count):
        open_one()
    while not stop.is_set():
        for key, _ in sel.select(0.05):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                gone = not sock.recv(4096)
            except BlockingIOError:
                gone = False
            except OSError:
                gone = True
            if gone:
                sel.unregister(sock)
                sock.close()
                open_one()
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]


def fetched(url: str) -> float:
    try:
        text = requests.get(url + "/metrics", timeout=3).text
    except requests.RequestException:
        return -1.0
    for line in text.splitlines():
        if line.startswith("listener_hls_segments_fetched_total"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_systemd_units_raise_the_descriptor_limit() -> None:
    units = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
    for unit in ("listener@.service", "listener-fleet.service"):
        found = re.findall(r"(?m)^LimitNOFILE=(\d+)$", (units / unit).read_text())
        assert found and int(found[0]) >= 4 * 256 * 4, unit


def _fd_kinds(pid: int) -> Counter[str]:
    """What a process's descriptors are (for the failure message); some close meanwhile."""
    kinds: Counter[str] = Counter()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            kinds[os.readlink(fd).split(":")[0]] += 1
        except OSError:
            kinds["closed meanwhile"] += 1
    return kinds
