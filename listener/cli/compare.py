"""``listener detect --models``: every configured model on the same files, side by side."""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from listener.cli.exports import Track, check_audacity_target, write_exports
from listener.cli.output import fmt_time, human_out, write_json
from listener.config import Config
from listener.errors import ListenerError
from listener.model.backends import load_backend
from listener.model.backends.check import plan_models
from listener.pipeline.multi import MultiFileResult, agreement, clip_grid, score_file_models


def _cell(clip: Any) -> str:
    if clip is None:
        return "(no clip)"
    if clip.clip.detected:
        return f"YES {clip.labels.label} {clip.clip.confidence:.1f}"
    top = max((w.score for w in clip.clip.windows), default=0.0)
    return f"no (max {top:.2f})"


def print_table(result: MultiFileResult, out: IO[str]) -> None:
    """Per clip, each model's verdict, label and confidence; then per-pair agreement."""
    ids = [r.plan.id for r in result.runs]
    width = max(20, *(len(i) + 2 for i in ids))
    print(f"{result.file}: {result.duration_s:.1f} s at {result.sample_rate} Hz, "
          f"{len(ids)} model(s)", file=out)
    print(f"  {'clip':<17}" + "".join(f"{i:<{width}}" for i in ids) + "fired", file=out)
    for _, clips in clip_grid(result):
        first = next(iter(clips.values())).clip
        span = f"{fmt_time(first.start_s)}-{fmt_time(first.end_s)}"
        fired = [i for i in ids if i in clips and clips[i].clip.detected]
        print(f"  {span:<17}" + "".join(f"{_cell(clips.get(i)):<{width}}" for i in ids)
              + (", ".join(fired) or "-"), file=out)
    for p in agreement(result):
        print(f"  agreement {p.a} vs {p.b}: {p.both + p.neither}/{p.clips} clips "
              f"({100 * p.rate:.0f}%): both {p.both}, only {p.a} {p.only_a}, "
              f"only {p.b} {p.only_b}, neither {p.neither}", file=out)


def detect_models(cfg: Config, args: argparse.Namespace) -> int:
    """Score ``args.files`` with every model of ``cfg`` (or those ``--models`` names)."""
    plans = plan_models(cfg)
    if args.models:
        wanted = [s.strip() for s in args.models.split(",") if s.strip()]
        unknown = [w for w in wanted if w not in {p.id for p in plans}]
        if unknown:
            raise ListenerError(f"--models: unknown model id(s) {unknown}; the config has "
                                f"{[p.id for p in plans]}")
        plans = [p for p in plans if p.id in wanted]
    planned = len(args.files) * len(plans)
    check_audacity_target(args.audacity, planned)
    backends = [load_backend(p, cfg.frontend) for p in plans]
    outputs: list[dict[str, Any]] = []
    tracks: list[Track] = []
    failed = 0
    for path in args.files:
        try:
            result = score_file_models(path, plans, backends, cfg.detection.clip_s)
        except ListenerError as err:
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            outputs.append({"file": path, "error": str(err)})
            continue
        outputs.append(result.to_json())
        tracks.extend(_tracks(result))
        if not args.quiet:
            print_table(result, human_out(args.json))
    if args.json:
        write_json(outputs, args.json)
    write_exports(args.raven, args.audacity, tracks, planned)
    return 1 if failed else 0


def _tracks(result: MultiFileResult) -> list[Track]:
    """One label track per model, on that model's own clips and hop."""
    return [Track(result.file, [c.clip for c in r.clips], r.aggregator.rule.detection,
                  model=r.plan.id, label=[c.labels.label for c in r.clips])
            for r in result.runs]
