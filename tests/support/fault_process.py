"""Process faults: the daemon as its own process against the loopback Orcasound node.

SIGKILL, SIGSTOP, restarts and a misbehaving webhook need a real process with
the daemon's own signal handling. :func:`scenario` publishes a 130 s tone
stream (one tone in each 60 s clip) at 16x on a :class:`FaultNode` and lets a
test start daemon processes (``python -m support.fault_daemon``) one after
another against it, all sharing one work folder (state, events, outbox).
:func:`check_scenario` then holds the runs together to issue 14's promises:
true UTC within 25 ms, each clip under one id, every second of the stream
scored or reported lost (the coverage ledger the runs leave behind), no
traceback in any log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from listener.config import Config, MetricsConfig
from listener.web.coverage import CoverageLedger
from support.daemon_support import read_events
from support.fault_node import (
    FOLDER,
    NODE,
    SPEED,
    FaultCase,
    FaultNode,
    Segments,
    case_config,
    check_onsets,
    expected_positive_utc,
    positive_utc,
    scrape_metrics,
)

TESTS = Path(__file__).resolve().parents[1]
LONG_S = 130.0
LONG_TONES = ((20.5, 25.5), (80.5, 85.5))  # one in each clip; both clips end by 130 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


class DaemonProcess:
    """One daemon run: ``python -m support.fault_daemon CONFIG`` with its log in a file."""

    def __init__(self, config_path: Path, log_path: Path, port: int) -> None:
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": str(TESTS), "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "support.fault_daemon", str(config_path)],
                cwd=TESTS, env=env, stdout=log, stderr=subprocess.STDOUT)

    def metric(self, name: str) -> float:
        """The station's sample ``name`` (summed over labels); 0 when not answering."""
        try:
            samples = scrape_metrics(self.url)
        except requests.RequestException:
            return 0.0
        return sum(v for k, v in samples.items() if k.split("|", 1)[0] == name)

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM, and the exit status once it has shut down."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Scenario:
    node: FaultNode
    workdir: Path
    config_path: Path
    port: int
    published: threading.Event
    runs: list[DaemonProcess] = field(default_factory=list)

    def start(self) -> DaemonProcess:
        run = DaemonProcess(self.config_path, self.workdir / f"run{len(self.runs) + 1}.log",
                            self.port)
        self.runs.append(run)
        return run

    def events(self) -> list[dict[str, Any]]:
        return read_events(self.workdir / "events.jsonl")

    def detections(self) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["kind"] == "detection"]

    def wait_until_done(self, run: DaemonProcess, timeout_s: float = 90.0) -> None:
        """Until the whole stream is published and ``run`` has decoded all it will."""
        wait_for("the stream to be published", self.published.is_set, timeout_s)
        last, since = -1.0, time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() - since < 2.0:
            assert time.monotonic() < deadline, "the daemon never settled"
            value = run.metric("listener_audio_decoded_seconds_total")
            if value != last or not value:  # 0: not serving yet, or not started
                last, since = value, time.monotonic()
            time.sleep(0.1)


@contextmanager
def scenario(segments: Segments, workdir: Path, **config: Any) -> Iterator[Scenario]:
    """The node publishing ``segments`` at 16x; a config for daemon processes against it."""
    node = FaultNode()
    port = free_port()
    published = threading.Event()
    with node:
        node.start_folder(NODE, FOLDER)
        cfg = case_config(node.base_url, workdir, FaultCase(
            "process", config={"metrics": MetricsConfig(host="127.0.0.1", port=port),
                               **config}))
        path = workdir / "config.json"
        path.write_text(json.dumps(cfg.model_dump(mode="json", exclude_unset=True)))
        sc = Scenario(node, workdir, path, port, published)

        def publish() -> None:
            for data, dur in segments:
                node.publish(NODE, data, dur)
                time.sleep(dur / SPEED)
            published.set()

        threading.Thread(target=publish, daemon=True).start()
        try:
            yield sc
        finally:
            for run in sc.runs:
                if run.proc.poll() is None:
                    run.proc.kill()
                    run.proc.wait()


def check_scenario(sc: Scenario, cfg_station: str = NODE, max_lost_s: float = 0.0) -> None:
    """The promises of issue 14 over all runs of a scenario."""
    logs = "\n".join(run.log for run in sc.runs)
    assert "Traceback" not in logs, f"a traceback was logged:\n{logs[-3000:]}"
    by_clip: dict[str, set[str]] = {}
    for e in sc.detections():
        by_clip.setdefault(e["timestamp"], set()).add(e["id"])
    assert by_clip and all(len(ids) == 1 for ids in by_clip.values()), \
        f"a clip emitted under two ids: {by_clip}"
    decided = [expected_positive_utc(t) for t in LONG_TONES]
    inside = set().union(*(d[0] for d in decided))
    touching = set().union(*(d[1] for d in decided))
    got = positive_utc(sc.detections())
    assert got <= touching, f"positive seconds off their true UTC: {sorted(got)}"
    assert inside <= got, f"tone seconds {sorted(inside - got)} not detected"
    check_onsets("process scenario", sc.events(), [FOLDER + a for a, _ in LONG_TONES])
    spans = CoverageLedger.for_station(sc.workdir / "state", cfg_station).spans(
        FOLDER, FOLDER + LONG_S)
    lost = sum(s.seconds for s in spans if s.kind == "lost")
    assert lost <= max_lost_s + 0.5, f"lost {lost:.1f} s: {spans}"
    covered = float(FOLDER)
    for s in sorted(spans, key=lambda s: s.start):
        assert s.start <= covered + 0.5, f"{s.start - covered:.1f} s never accounted: {spans}"
        covered = max(covered, s.end)
    assert covered >= FOLDER + LONG_S - 3.0, f"the stream's end never scored: {spans}"


def config_of(sc: Scenario) -> Config:
    return Config.model_validate(json.loads(sc.config_path.read_text()))


class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers by a script, then 200.

    ``script`` items: ``"slow"`` (answer after ``slow_s``), ``"429"`` (with
    ``Retry-After: retry_after_s``), ``"400"``, ``"500"``. Every request is
    recorded as ``(monotonic arrival time, Idempotency-Key, body id, status)``.
    """

    def __init__(self, port: int, script: list[str], slow_s: float = 3.0,
                 retry_after_s: int = 2) -> None:
        self.port, self.script = port, list(script)
        self.slow_s, self.retry_after_s = slow_s, retry_after_s
        self.requests: list[tuple[float, str, str, int]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def _answer(self) -> str:
        with self._lock:
            return self.script.pop(0) if self.script else "200"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                what = receiver._answer()
                if what == "slow":
                    time.sleep(receiver.slow_s)
                status = 200 if what == "slow" else int(what)
                try:
                    body_id = str(json.loads(body).get("id"))
                except ValueError:
                    body_id = "not json"
                with receiver._lock:
                    receiver.requests.append((arrived, self.headers.get(
                        "Idempotency-Key", ""), body_id, status))
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", str(receiver.retry_after_s))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def delivered(self) -> set[str]:
        with self._lock:
            return {key for _, key, _, status in self.requests if 200 <= status < 300}
