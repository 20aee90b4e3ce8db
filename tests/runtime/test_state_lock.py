"""One listener per state folder: a second ``listener run`` is refused, naming the first's PID."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from listener.config import parse_config
from listener.errors import ListenerError
from listener.runtime.statelock import STATE_LOCK_NAME, acquire, holder, lock_files

DEMO = Path(__file__).parents[2] / "listener" / "data" / "demo_resnet18.safetensors"


def _station(path: Path, station: str, jsonl: str = "out/events.jsonl") -> Path:
    path.write_text(f"""
station: {{id: {station}}}
stream: {{kind: orcasound, node: rpi_x, base_url: 'http://127.0.0.1:9', poll_interval_s: 0.5}}
model: {{weights: {DEMO}, cpu_threads: 1}}
outputs: {{jsonl: {{path: {jsonl}}}}}
metrics: {{enabled: false}}
state: {{dir: state}}
""")
    return path


@pytest.mark.slow
def test_a_second_daemon_on_the_same_state_folder_is_refused(tmp_path: Path) -> None:
    first_cfg = _station(tmp_path / "a.yaml", "a")
    second_cfg = _station(tmp_path / "b.yaml", "b", jsonl="out/b.jsonl")
    lock = tmp_path / "state" / STATE_LOCK_NAME
    first = subprocess.Popen([sys.executable, "-m", "listener", "run", "--config",
                              str(first_cfg)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while holder([lock]) is None and time.monotonic() < deadline:
            assert first.poll() is None, first.stdout.read() if first.stdout else ""
            time.sleep(0.1)
        assert holder([lock]) == first.pid
        second = subprocess.run([sys.executable, "-m", "listener", "run", "--config",
                                 str(second_cfg)], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"PID {first.pid}" in second.stderr and "state.dir" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None  # the first one is untouched
    finally:
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0, out
    assert holder([lock]) is None  # released at exit; the next start may take it


def test_outputs_are_locked_too_and_a_fleet_locks_a_shared_folder_once(tmp_path: Path) -> None:
    a = parse_config(f"station: {{id: a}}\nstate: {{dir: {tmp_path}/s1}}\n"
                     f"outputs: {{jsonl: {{path: {tmp_path}/events.jsonl}}}}\n")
    b = parse_config(f"station: {{id: b}}\nstate: {{dir: {tmp_path}/s2}}\n"
                     f"outputs: {{jsonl: {{path: {tmp_path}/events.jsonl}}}}\n")
    c = parse_config(f"station: {{id: c}}\nstate: {{dir: {tmp_path}/s1}}\n")
    with acquire([a, c]) as held:  # one process, one shared state folder: fine
        assert len(held.paths) == 2
        with pytest.raises(ListenerError, match=r"outputs\.jsonl\.path: .* in use by another "
                                                r"listener \(PID \d+"):
            acquire(b)  # its own state folder, but a's events file
        assert holder(p for _k, p in lock_files(b)) is not None
    with acquire(b):
        pass
