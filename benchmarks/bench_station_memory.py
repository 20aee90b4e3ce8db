"""Where a station's memory goes: each part's share of one added live station.

Runs the real daemon (``listener run --config DIR``) twice, over ``--counts``
loopback Orcasound stations (as ``bench_fleet.py``: real MPEG-TS/AAC
segments at real-time pace, ResNet18 with random weights, CPU), each time
with ``tracemalloc`` on inside the daemon. After ``--seconds`` the daemon
itself (a timer thread) records:

* its own ``/proc/self/smaps``, split into code and libraries (file-backed),
  the main heap, other malloc arenas (threads' heaps), thread stacks and
  other anonymous mappings (large numpy/torch buffers);
* its thread count, by name prefix;
* ``/proc/<pid>/smaps_rollup`` of each ffmpeg decoder: RSS, PSS (the static
  binary's text is shared between decoders, so PSS is what one really costs)
  and anonymous memory;
* ``tracemalloc``: live Python allocations attributed to the innermost
  ``listener`` module on their stack: the clip audio ring
  (``audio/history.py``), decoder pipes, pipeline buffers and queues, the
  coverage ledger, the console's per-station state, sources, events;

then stops (the timer starts once every station's decoder runs). The
difference between the two runs, divided by the added stations, is each
part's cost per station. ``--clips`` adds a clip sink (and
so the audio ring) to every station.

    python benchmarks/bench_station_memory.py [--counts 1,6] [--seconds 60] [--clips]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

import yaml
from bench_fleet import BASE_PORT, station_yaml, tree
from common import RECORDING, cpu_model, host_flags, random_resnet18

from listener.demo.server import LiveNode, make_segments

#: tracemalloc: the innermost ``listener`` file on an allocation's stack -> part.
PARTS = (
    ("listener/audio/history.py", "clip audio ring (audio/history.py)"),
    ("listener/audio/decode.py", "decoder pipes (audio/decode.py)"),
    ("listener/audio/", "audio: windows, probing"),
    ("listener/pipeline/", "pipeline buffers and queues"),
    ("listener/web/coverage.py", "coverage ledger"),
    ("listener/web/", "console per-station state"),
    ("listener/web/", "console per-station state"),
    ("listener/metrics.py", "metrics"),
    ("listener/metrics.py", "metrics"),
    ("listener/sources/", "sources: playlists, HTTP"),
    ("listener/events/", "events and sinks"),
    ("listener/", "other listener code"),
)
OUTSIDE = "allocated outside listener code (imports, asyncio, torch...)"


def part_of(trace: tracemalloc.Traceback) -> str:
    for frame in reversed(trace):  # tracemalloc lists the oldest frame first
        name = frame.filename.replace(os.sep, "/")
        at = name.rfind("listener/")
        if at >= 0 and "/site-packages/" not in name[at - 14:at] and "/.venv/" not in name:
            rel = name[at:]
            for prefix, part in PARTS:
                if rel.startswith(prefix):
                    return part
    return OUTSIDE


def smaps_parts(pid: int | str = "self") -> dict[str, float]:
    """MB of a process's memory by kind (RSS), from ``/proc/<pid>/smaps``."""
    out = dict.fromkeys(("code and libraries", "main heap", "malloc arenas (threads' heaps)",
                         "thread stacks", "other anonymous (large buffers)"), 0.0)
    head = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$")
    kind = ""
    size = 0
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        m = head.match(line)
        if m:
            start, path = int(m.group(1), 16), m.group(3)
            size = (int(m.group(2), 16) - start) // 1024
            if path == "[heap]":
                kind = "main heap"
            elif path.startswith("/"):
                kind = "code and libraries"
            elif path:
                kind = "other anonymous (large buffers)"  # [stack], [vvar]...
            elif start % (64 << 20) == 0 and size <= 65536:
                kind = "malloc arenas (threads' heaps)"  # glibc aligns them to 64 MB
            elif size in (8192, 8196, 8200):
                kind = "thread stacks"
            else:
                kind = "other anonymous (large buffers)"
        elif line.startswith("Rss:"):
            out[kind] += int(line.split()[1]) / 1024
    return out


def rollup(pid: int) -> dict[str, float]:
    vals = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        vals[key] = int(value.split()[0]) / 1024
    return {"rss": vals["Rss"], "pss": vals["Pss"], "anon": vals["Anonymous"]}


def record(out: Path) -> None:
    """Inside the daemon: write what its memory holds to ``out``, then stop it."""
    parts: dict[str, float] = {}
    lines: dict[str, float] = {}
    for stat in tracemalloc.take_snapshot().statistics("traceback"):
        part = part_of(stat.traceback)
        parts[part] = parts.get(part, 0.0) + stat.size / 2**20
        where = next((f"{f.filename.rsplit('listener/', 1)[-1]}:{f.lineno}"
                      for f in reversed(stat.traceback) if "listener/" in f.filename),
                     "outside")
        lines[where] = lines.get(where, 0.0) + stat.size / 2**20
    parts.update({f"  line {k}": v for k, v in sorted(lines.items(), key=lambda kv: -kv[1])[:8]})
    threads: dict[str, int] = {}
    for thread in threading.enumerate():  # Python names; /proc comm is "python" for all
        name = re.sub(r"[_\-]?\d+(_\d+)?$", "", thread.name.split(" ")[0])
        threads[name] = threads.get(name, 0) + 1
    threads["native (torch, OpenMP...)"] = (len(list(Path("/proc/self/task").iterdir()))
                                            - threading.active_count())
    decoders = []
    for pid in tree(os.getpid())[1:]:
        try:
            if "ffmpeg" in Path(f"/proc/{pid}/comm").read_text():
                decoders.append(rollup(pid))
        except OSError:
            continue
    own = rollup(os.getpid())
    out.write_text(json.dumps({"python": parts, "smaps": smaps_parts(), "own": own,
                               "threads": threads, "decoders": decoders}))
    os.kill(os.getpid(), signal.SIGTERM)


def decoders_running() -> int:
    count = 0
    for pid in tree(os.getpid())[1:]:
        try:
            count += "ffmpeg" in Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            continue
    return count


def record_when_running(n: int, seconds: float, out: Path) -> None:
    """Wait for ``n`` decoders (every station streaming), then ``seconds``, then record."""
    deadline = time.monotonic() + 600
    while decoders_running() < n and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(seconds)
    record(out)


def child(argv: list[str]) -> int:
    """``--child N SECONDS OUT listener-args...``: the daemon with tracemalloc and a timer."""
    n, seconds, out = int(argv[0]), float(argv[1]), Path(argv[2])
    # Imported before tracing: the imports (torch) would take minutes traced,
    # and what a station adds is allocated after them.
    import listener.model.scorer
    import listener.runtime.runner  # noqa: F401
    from listener.cli import main

    tracemalloc.start(12)
    threading.Thread(target=record_when_running, args=(n, seconds, out), daemon=True).start()
    return int(main(argv[3:]) or 0)


def run_one(n: int, work: Path, weights: Path, segments: list, seconds: float,
            clips: bool) -> dict:
    step = work / f"n{n}"
    cfg_dir = step / "configs"
    cfg_dir.mkdir(parents=True)
    start = int(time.time()) - 20
    nodes = [LiveNode(f"sim{i:03d}", start, work / "hls", segments) for i in range(n)]
    for i, node in enumerate(nodes):
        node.start(initially=2)
        cfg = station_yaml(i, node, step, weights, BASE_PORT)
        if clips:
            cfg["outputs"]["clips"] = {"dir": str(step / "clips")}
        (cfg_dir / f"sim{i:03d}.yaml").write_text(yaml.safe_dump(cfg))
    out = step / "memory.json"
    cmd = [sys.executable, __file__, "--child", str(n), str(seconds), str(out),
           "--log-level", "WARNING", "run", "--config", str(cfg_dir)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=seconds + 900)
    finally:
        for node in nodes:
            node.stop()
    if not out.exists():
        raise SystemExit(f"N={n}: the daemon wrote no record (exit {proc.returncode}): "
                         f"{err.decode(errors='replace')[-2000:]}")
    return json.loads(out.read_text())


def per_station(a: dict, b: dict, na: int, nb: int) -> list[tuple[str, float, float]]:
    """(part, MB at the larger N, MB per added station) rows."""
    rows = []
    for group in ("python", "smaps"):
        for key in sorted(set(a[group]) | set(b[group])):
            x, y = a[group].get(key, 0.0), b[group].get(key, 0.0)
            rows.append((f"{group}: {key}", y, (y - x) / (nb - na)))
    for key in ("pss", "anon", "rss"):
        x = sum(d[key] for d in a["decoders"])
        y = sum(d[key] for d in b["decoders"])
        rows.append((f"ffmpeg decoders: {key.upper()}", y, (y - x) / (nb - na)))
    rows.append(("daemon process: PSS", b["own"]["pss"], (b["own"]["pss"] - a["own"]["pss"])
                 / (nb - na)))
    x = a["own"]["pss"] + sum(d["pss"] for d in a["decoders"])
    y = b["own"]["pss"] + sum(d["pss"] for d in b["decoders"])
    rows.append(("TOTAL PSS (daemon + decoders)", y, (y - x) / (nb - na)))
    return rows


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(child(sys.argv[2:]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="1,6", help="two station counts")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--clips", action="store_true", help="a clip sink (and audio ring) each")
    args = p.parse_args()
    na, nb = (int(c) for c in args.counts.split(","))
    out = sys.stdout.write
    out(f"CPU: {cpu_model()}, {os.cpu_count()} cores, {host_flags()}; clips "
        f"{'on' if args.clips else 'off'}; {args.seconds:g} s per run\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = random_resnet18(work / "r18.safetensors")
        segments = make_segments(RECORDING, work / "hls", 4 * 60 + 2 * args.seconds)
        a = run_one(na, work, weights, segments, args.seconds, args.clips)
        b = run_one(nb, work, weights, segments, args.seconds, args.clips)
    out(f"{'part':62s} {'MB at N=' + str(nb):>10s} {'MB/station':>11s}\n")
    for name, total, each in per_station(a, b, na, nb):
        out(f"{name:62s} {total:10.1f} {each:11.2f}\n")
    out(f"threads at N={nb}: {json.dumps(b['threads'])}\n")
    out(f"threads at N={na}: {json.dumps(a['threads'])}\n")


if __name__ == "__main__":
    main()
