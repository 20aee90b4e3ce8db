"""Stations per process: one `listener run` over N stations against N separate processes.

Each simulated station is a loopback Orcasound node (real MPEG-TS/AAC segments
cut by ffmpeg from the bundled L pod recording) publishing at real-time pace.
For each precision (``--precision float32,bfloat16``; ``--device cuda`` runs
float16 on the GPU) and each N, the real daemon runs as a subprocess
(`listener run --config DIR`, real ResNet18 with random weights); once every
station reports, it is measured for ``--seconds``: its ``/metrics`` are
scraped for every station's lag, and its process tree's CPU time, RSS and
PSS are read from /proc. PSS is what the tree really holds: the ffmpeg
decoders share their static binary's ~25 MB of text, which RSS counts once
per decoder. The same is then done with N separate
`listener run` processes, up to ``--max-separate``. A step is "real time"
when, over the last segment period, every station's lag came back under
2 x the poll interval (the live edge jumps 10 s at each new segment, so the
lag saws even when scoring keeps up). RSS and CPU include the ffmpeg decoders.

Prints the CPU model and flags (bf16, AMX, AVX-512), a row per (precision,
mode, N), then per precision and mode: PSS and CPU per added station, the
largest N that stayed real time, stations per core and per GB (of PSS).
bfloat16 on a CPU without native support is refused by the daemon (it would
be emulated, many times slower); its rows then say so.

    python benchmarks/bench_fleet.py [--counts 1,5,10,20] [--seconds 60]
        [--precision float32,bfloat16] [--device cpu|cuda] [--max-separate 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml
from common import RECORDING, cpu_model, host_flags, random_resnet18
from prometheus_client.parser import text_string_to_metric_families

from listener.demo.server import LiveNode, make_segments
from listener.model.precision import cpu_has_native_bf16

POLL_S = 2.0
SEGMENT_S = 10.0  # the demo segmenter's segment length
BASE_PORT = 19300


@dataclass
class Step:
    precision: str
    mode: str
    n: int
    realtime: bool
    max_lag_s: float
    rss_mb: float
    cpu_cores: float
    pss_mb: float = 0.0


def station_yaml(i: int, node: LiveNode, work: Path, weights: Path, port: int,
                 device: str = "cpu", precision: str = "auto") -> dict:
    return {
        "station": {"id": f"sim{i:03d}", "name": f"simulated {i}",
                    "longitude": -123.0, "latitude": 48.5},
        "stream": {"kind": "orcasound", "base_url": node.base_url, "node": node.node,
                   "poll_interval_s": POLL_S, "start_segments_back": 1},
        "model": {"architecture": "resnet18", "weights": str(weights), "device": device,
                  "precision": precision, "batch_size": 16, "max_batch_wait_s": 0.5},
        "outputs": {"log": False, "jsonl": {"path": str(work / f"events{i:03d}.jsonl")}},
        "metrics": {"host": "127.0.0.1", "port": port},
        "state": {"dir": str(work / "state")},
    }


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (ffmpeg decoders)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def usage(pids: list[int]) -> tuple[float, float, float]:
    """(CPU seconds, RSS MB, PSS MB) of the processes and their descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = rss = pss = 0.0
    for root in pids:
        for p in tree(root):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                cpu += (int(fields[11]) + int(fields[12])) / tick
                for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1]) / 1024
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1]) / 1024
            except (OSError, IndexError, ValueError):
                continue
    return cpu, rss, pss


def lags(port: int) -> dict[str, float]:
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except requests.RequestException:
        return {}
    out = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "listener_stream_lag_seconds":
            for s in fam.samples:
                out[s.labels["station"]] = s.value
    return out


def all_lags(ports: list[int]) -> dict[str, float]:
    seen: dict[str, float] = {}
    for port in sorted(set(ports)):
        seen.update(lags(port))
    return seen


def run_step(mode: str, n: int, nodes: list[LiveNode], work: Path, weights: Path,
             seconds: float, device: str = "cpu", precision: str = "auto",
             baseline: Path | None = None) -> Step:
    step_dir = work / f"{precision}-{mode}{n}"
    cfg_dir = step_dir / "configs"
    cfg_dir.mkdir(parents=True)
    ports = [BASE_PORT + (0 if mode != "separate" else i) for i in range(n)]
    for i in range(n):
        (cfg_dir / f"sim{i:03d}.yaml").write_text(yaml.safe_dump(
            station_yaml(i, nodes[i], step_dir, weights, ports[i], device, precision)))
    cmd = [sys.executable, "-m", "listener", "--log-level", "WARNING", "run"]
    if mode != "separate":
        argv = [[*cmd, "--config", str(cfg_dir)]]
    else:
        argv = [[*cmd, "--config", str(cfg_dir / f"sim{i:03d}.yaml")] for i in range(n)]
    # "baseline": the same fleet run by another checkout (``-m listener`` imports
    # the package of the folder it starts in), side by side in this run.
    cwd = baseline if mode == "baseline" else None
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
             for a in argv]
    try:
        # Start-up (imports, model load) and the first segments, before measuring.
        deadline = time.monotonic() + 300
        while len(all_lags(ports)) < n and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break  # refused (bfloat16 without native support) or crashed
            time.sleep(2)
        if any(p.poll() is not None for p in procs):
            err = next(p for p in procs if p.poll() is not None).stderr
            why = err.read().decode(errors="replace").strip().splitlines() if err else []
            sys.stdout.write(f"  {precision} {mode} N={n}: the daemon exited: "
                             f"{why[-1] if why else '?'}\n")
            return Step(precision, mode, n, False, float("inf"), 0.0, 0.0)
        time.sleep(2 * POLL_S)
        cpu0, _, _ = usage([p.pid for p in procs])
        t0 = time.monotonic()
        time.sleep(max(0.0, seconds - SEGMENT_S - 5))
        # The live edge jumps a whole segment ahead when one is published, so
        # the lag saws between ~0 and ~10 s even when scoring keeps up: keeping
        # up means every station's lag comes back down within each segment period.
        lowest: dict[str, float] = {}
        end = time.monotonic() + SEGMENT_S + 5
        while time.monotonic() < end:
            for station, lag in all_lags(ports).items():
                lowest[station] = min(lag, lowest.get(station, float("inf")))
            time.sleep(0.5)
        cpu1, rss, pss = usage([p.pid for p in procs])
        wall = time.monotonic() - t0
        seen = lowest
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    worst = max(seen.values()) if len(seen) == n else float("inf")
    return Step(precision, mode, n, worst < 2 * POLL_S, worst, rss, (cpu1 - cpu0) / wall,
                pss)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="1,5,10,20")
    p.add_argument("--max-separate", type=int, default=10, help="0 = fleet mode only")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--device", default="cpu", help="cpu or cuda (stations per GPU, float16)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another checkout (e.g. a git worktree of the previous commit): its "
                        "fleet runs beside this one at each N, as mode 'baseline'")
    p.add_argument("--precision", default=None,
                   help="comma-separated, e.g. float32,bfloat16; default float32 on cpu, "
                        "float16 on cuda")
    args = p.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    precisions = (args.precision or ("float16" if args.device == "cuda" else "float32")
                  ).split(",")
    out = sys.stdout.write
    out(f"CPU: {cpu_model()}, {os.cpu_count()} cores, {host_flags()}; native bf16: "
        f"{cpu_has_native_bf16()}; ResNet18 on {args.device}, random weights\n")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = random_resnet18(work / "r18.safetensors")
        segments = make_segments(RECORDING, work / "hls", 8 * 60 + 2 * args.seconds)
        steps: list[Step] = []
        modes = ["fleet", *(["baseline"] if args.baseline else []), "separate"]
        for precision in precisions:
            for mode in modes:
                for n in counts:
                    if mode == "separate" and n > args.max_separate:
                        continue
                    step = measure(mode, n, work, weights, segments, args, precision)
                    steps.append(step)
                    out(f"{precision:8s} {mode:9s} N={n:3d}: "
                        f"{'real time' if step.realtime else 'BEHIND':9s} "
                        f"lag {step.max_lag_s:6.1f} s, PSS {step.pss_mb:7.0f} MB (RSS "
                        f"{step.rss_mb:7.0f}), CPU {step.cpu_cores:4.2f} cores\n")
    summarize(out, steps)


def measure(mode: str, n: int, work: Path, weights: Path, segments: list,
            args: argparse.Namespace, precision: str) -> Step:
    start = int(time.time()) - 20
    nodes = [LiveNode(f"sim{i:03d}", start, work / "hls", segments) for i in range(n)]
    for node in nodes:
        node.start(initially=2)
    try:
        return run_step(mode, n, nodes, work, weights, args.seconds, args.device, precision,
                        args.baseline)
    finally:
        for node in nodes:
            node.stop()


def summarize(out: object, steps: list[Step]) -> None:
    write = out  # type: ignore[assignment]
    assert callable(write)
    cores = os.cpu_count() or 1
    for precision in dict.fromkeys(s.precision for s in steps):
        for mode in ("fleet", "baseline", "separate"):
            rows = [s for s in steps if s.mode == mode and s.precision == precision
                    and s.pss_mb > 0]
            ok = [s for s in rows if s.realtime]
            if len(rows) >= 2:
                a, b = rows[0], rows[-1]
                per_pss = (b.pss_mb - a.pss_mb) / (b.n - a.n)
                per_rss = (b.rss_mb - a.rss_mb) / (b.n - a.n)
                per_cpu = (b.cpu_cores - a.cpu_cores) / (b.n - a.n)
                write(f"{precision} {mode}: each added station costs {per_pss:.1f} MB PSS "
                      f"({per_rss:.1f} MB RSS) and {per_cpu * 100:.1f}% of a core\n")
            if ok:
                best = max(ok, key=lambda s: s.n)
                write(f"{precision} {mode}: largest N in real time {best.n} = "
                      f"{best.n / cores:.1f} stations per core, "
                      f"{best.n / (best.pss_mb / 1024):.1f} per GB (PSS)\n")
            elif rows:
                write(f"{precision} {mode}: no N ran in real time\n")


if __name__ == "__main__":
    main()
