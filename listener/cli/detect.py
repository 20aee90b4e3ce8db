"""``listener detect``: score recordings, print a summary, write JSON and label files.

With ``--json -`` stdout carries the JSON alone: the summaries, the progress
bar and notices go to stderr, so ``listener detect F --json - | jq`` works.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

from listener.audio.level import LevelRange
from listener.cli.exports import Track, check_audacity_target, write_exports
from listener.cli.output import fmt_time, human_out, write_json
from listener.cli.progress import ProgressBar
from listener.config import Config
from listener.errors import ListenerError

EXIT_FAILED = 1


def cmd_detect(args: argparse.Namespace, cfg: Config) -> int:
    from listener.model.scorer import Scorer
    from listener.pipeline.files import score_file

    if args.models is not None:
        from listener.cli.compare import detect_models

        return detect_models(cfg, args)
    check_audacity_target(args.audacity, len(args.files))
    scorer = Scorer(cfg.model, cfg.frontend)
    trained = LevelRange.of_weights(cfg.model.model_id, cfg.model.weights)
    failed = 0
    outputs: list[dict[str, Any]] = []
    tracks: list[Track] = []
    out = human_out(args.json)
    tty = sys.stderr.isatty() and not args.quiet
    for path in args.files:
        bar = ProgressBar(Path(path).name) if tty else None
        try:
            result = score_file(path, cfg, scorer.score_waves, scorer.frontend, progress=bar,
                                score_features=scorer.score_features)
        except ListenerError as err:
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            outputs.append({"file": path, "error": str(err)})
            continue
        finally:
            if bar:
                bar.close()
        note = trained.outside_note(result.levels_dbfs) if trained else None
        if note:
            print(f"warning: {path}: {note}", file=sys.stderr)
        outputs.append(result.to_json(scorer.info))
        tracks.append(Track(path, result.clips, cfg.detection))
        if not args.quiet:
            print_summary(result, out)
    if args.json:
        write_json(outputs, args.json)
    write_exports(args.raven, args.audacity, tracks, planned=len(args.files))
    if failed:
        print(f"{failed} of {len(args.files)} file(s) could not be processed", file=sys.stderr)
        return EXIT_FAILED
    return 0


def print_summary(result: Any, out: IO[str]) -> None:
    n = len(result.windows)
    top = max((w.score for w in result.windows), default=0.0)
    print(f"{result.file}: {result.duration_s:.1f} s at {result.sample_rate} Hz, "
          f"{n} window(s), highest score {top:.3f}", file=out)
    for c in result.clips:
        pos = [s.start_s for s in c.seconds if s.positive]
        verdict = f"DETECTED confidence {c.confidence:.1f}" if c.detected else "no call"
        extra = f", positive seconds {', '.join(f'{p:g}' for p in pos)}" if pos else ""
        print(f"  {fmt_time(c.start_s)}-{fmt_time(c.end_s)}  {verdict}{extra}", file=out)


def add_label_export_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--raven", default=None, metavar="OUT",
                   help="also write the detections as one Raven Pro selection table (every "
                        "file; with --models, a Model column)")
    s.add_argument("--audacity", default=None, metavar="OUT",
                   help="also write the detections as an Audacity label track; with several "
                        "files (or --models) OUT is a folder, one <file stem>[.<model>].txt "
                        "per track")
