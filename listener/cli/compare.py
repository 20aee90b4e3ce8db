"""``listener detect --models``: every configured model on the same files, side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from listener.config import Config
from listener.errors import ListenerError
from listener.model.backends import load_backend
from listener.model.backends.check import plan_models
from listener.pipeline.multi import MultiFileResult, agreement, clip_grid, score_file_models


def _fmt_time(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def _cell(clip: Any) -> str:
    if clip is None:
        return "(no clip)"
    if clip.clip.detected:
        return f"YES {clip.labels.label} {clip.clip.confidence:.1f}"
    top = max((w.score for w in clip.clip.windows), default=0.0)
    return f"no (max {top:.2f})"


def print_table(result: MultiFileResult, out: Any = sys.stdout) -> None:
    """Per clip, each model's verdict, label and confidence; then per-pair agreement."""
    ids = [r.plan.id for r in result.runs]
    width = max(20, *(len(i) + 2 for i in ids))
    print(f"{result.file}: {result.duration_s:.1f} s at {result.sample_rate} Hz, "
          f"{len(ids)} model(s)", file=out)
    print(f"  {'clip':<17}" + "".join(f"{i:<{width}}" for i in ids) + "fired", file=out)
    for _, clips in clip_grid(result):
        first = next(iter(clips.values())).clip
        span = f"{_fmt_time(first.start_s)}-{_fmt_time(first.end_s)}"
        fired = [i for i in ids if i in clips and clips[i].clip.detected]
        print(f"  {span:<17}" + "".join(f"{_cell(clips.get(i)):<{width}}" for i in ids)
              + (", ".join(fired) or "-"), file=out)
    for p in agreement(result):
        print(f"  agreement {p.a} vs {p.b}: {p.both + p.neither}/{p.clips} clips "
              f"({100 * p.rate:.0f}%): both {p.both}, only {p.a} {p.only_a}, "
              f"only {p.b} {p.only_b}, neither {p.neither}", file=out)


def detect_models(cfg: Config, files: list[str], *, select: str | None, json_out: str | None,
                  quiet: bool) -> int:
    """Score ``files`` with every model of ``cfg`` (or those ``select`` names, comma-separated)."""
    plans = plan_models(cfg)
    if select:
        wanted = [s.strip() for s in select.split(",") if s.strip()]
        unknown = [w for w in wanted if w not in {p.id for p in plans}]
        if unknown:
            raise ListenerError(f"--models: unknown model id(s) {unknown}; the config has "
                                f"{[p.id for p in plans]}")
        plans = [p for p in plans if p.id in wanted]
    backends = [load_backend(p, cfg.frontend) for p in plans]
    outputs: list[dict[str, Any]] = []
    failed = 0
    for path in files:
        try:
            result = score_file_models(path, plans, backends, cfg.detection.clip_s)
        except ListenerError as err:
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            outputs.append({"file": path, "error": str(err)})
            continue
        outputs.append(result.to_json())
        if not quiet:
            print_table(result)
    if json_out:
        text = json.dumps(outputs[0] if len(outputs) == 1 else outputs, indent=1)
        if json_out == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(json_out).write_text(text + "\n", encoding="utf-8")
    return 1 if failed else 0
