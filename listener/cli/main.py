"""Command line: ``listener run | demo | replay | detect | features | check-config | ...``.

User errors (a bad config, a missing file, mismatched weights) print one clear
message and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from listener import __version__
from listener.cli.options import add_precision_flag
from listener.cli.progress import ProgressBar
from listener.config import Config, default_config, load_config, with_precision
from listener.errors import ListenerError

log = logging.getLogger("listener.cli.main")

EXIT_USAGE = 2
EXIT_FAILED = 1


def _load(args: argparse.Namespace) -> Config:
    cfg = load_config(args.config) if getattr(args, "config", None) else default_config()
    weights = getattr(args, "weights", None)
    if weights:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(
            update={"weights": Path(weights)})})
    return with_precision(cfg, getattr(args, "precision", None))


def _fmt_time(seconds: float) -> str:
    m, s = divmod(seconds, 60)
    h, m = divmod(int(m), 60)
    return f"{h}:{m:02d}:{s:04.1f}" if h else f"{m}:{s:04.1f}"


def cmd_detect(args: argparse.Namespace) -> int:
    from listener.model.scorer import Scorer
    from listener.pipeline.files import score_file

    cfg = _load(args)
    if args.models is not None:
        from listener.cli.compare import detect_models

        return detect_models(cfg, args.files, select=args.models or None, json_out=args.json,
                             quiet=args.quiet)
    scorer = Scorer(cfg.model, cfg.frontend)
    failed = 0
    outputs: list[dict[str, Any]] = []
    scored: list[tuple[str, Any]] = []
    tty = sys.stderr.isatty() and not args.quiet
    for path in args.files:
        bar = ProgressBar(Path(path).name) if tty else None
        try:
            result = score_file(path, cfg, scorer.score_waves, scorer.frontend, progress=bar,
                                score_features=scorer.score_features)
        except ListenerError as err:
            if bar:
                bar.close()
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            outputs.append({"file": path, "error": str(err)})
            continue
        if bar:
            bar.close()
        outputs.append(result.to_json(scorer.info))
        scored.append((path, result.clips))
        if not args.quiet:
            _print_summary(result)
    if args.json:
        doc: Any = outputs[0] if len(outputs) == 1 else outputs
        text = json.dumps(doc, indent=1)
        if args.json == "-":
            sys.stdout.write(text + "\n")
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    _export_labels(args, cfg, scored)
    if failed:
        print(f"{failed} of {len(args.files)} file(s) could not be processed", file=sys.stderr)
        return EXIT_FAILED
    return 0


def _export_labels(args: argparse.Namespace, cfg: Config, scored: list[tuple[str, Any]]) -> None:
    """``--raven OUT`` (one table for all files) and ``--audacity OUT`` (a track per file)."""
    from listener.quality.export import audacity_labels, raven_table

    if args.raven:
        Path(args.raven).write_text(raven_table(scored, cfg.detection), encoding="utf-8")
    if args.audacity:
        out = Path(args.audacity)
        if len(scored) > 1:
            out.mkdir(parents=True, exist_ok=True)
        for path, clips in scored:
            target = out / f"{Path(path).stem}.txt" if out.is_dir() else out
            target.write_text(audacity_labels(clips, cfg.detection), encoding="utf-8")


def _print_summary(result: Any) -> None:
    out = sys.stdout
    n = len(result.windows)
    top = max((w.score for w in result.windows), default=0.0)
    print(f"{result.file}: {result.duration_s:.1f} s at {result.sample_rate} Hz, "
          f"{n} window(s), highest score {top:.3f}", file=out)
    for c in result.clips:
        pos = [s.start_s for s in c.seconds if s.positive]
        verdict = f"DETECTED confidence {c.confidence:.1f}" if c.detected else "no call"
        extra = f", positive seconds {', '.join(f'{p:g}' for p in pos)}" if pos else ""
        print(f"  {_fmt_time(c.start_s)}-{_fmt_time(c.end_s)}  {verdict}{extra}", file=out)


def cmd_features(args: argparse.Namespace) -> int:
    from listener.cli.features import window_features

    cfg = _load(args)
    feats = window_features(args.file, args.start, args.duration, cfg)
    import numpy as np

    np.save(args.out, feats)
    print(f"wrote {args.out}: shape {tuple(feats.shape)} {feats.dtype}, "
          f"dB range {float(feats.min()):.2f}..{float(feats.max()):.2f}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from listener.runtime.preflight import preflight

    cfg = load_config(args.file)
    # What `run` checks before it loads the network, with the same messages.
    notes = preflight(cfg, running_ok=True)
    stream = cfg.stream
    where = "no stream" if stream is None else (
        f"orcasound node {stream.node} at {stream.base_url}" if stream.kind == "orcasound"
        else f"HLS {stream.url}")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{args.file}: OK — station {cfg.station.id}, {where}, weights {cfg.model.weights}")
    return 0


def cmd_convert_fastai(args: argparse.Namespace) -> int:
    from listener.model.fastai.convert import convert_fastai_export

    summary = convert_fastai_export(args.pkl, args.out, architecture=args.architecture,
                                    extra_stub_modules=tuple(args.allow_module))
    print(f"wrote {args.out}: {summary}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from listener.runtime.logs import setup_logging
    from listener.runtime.readiness import parse_quorum
    from listener.runtime.roster import Shard, load_roster
    from listener.runtime.runner import run_stations

    shard = Shard.parse(args.shard) if args.shard else None
    roster = load_roster(args.config, keep_going=args.keep_going, shard=shard)
    first = roster.stations[0].cfg
    single = len(roster.stations) == 1
    setup_logging(args.log_level or first.logging.level, args.log_format or first.logging.format,
                  station=first.station.id if single else None)
    for path, why in roster.skipped:
        log.error("skipped %s: %s", path, why)
    if not single:
        log.info("running %d stations%s: %s", len(roster.stations),
                 f" (shard {shard})" if shard else "",
                 ", ".join(e.cfg.station.id for e in roster.stations))
    quorum = parse_quorum(args.quorum, len(roster.stations))
    plans = [e.plan for e in roster.stations]
    if args.device:
        plans = [dataclasses.replace(p, cfg=p.cfg.model_copy(update={
            "model": p.cfg.model.model_copy(update={"device": args.device})})) for p in plans]
    return run_stations(plans, quorum=quorum, keep_going=args.keep_going)


def cmd_demo(args: argparse.Namespace) -> int:
    from listener.demo.run import run_demo

    return run_demo(lambda text: print(text, flush=True), duration_s=args.duration,
                    weights=args.weights, port=args.port)


def cmd_replay(args: argparse.Namespace) -> int:
    from listener.replay.runner import run_replay

    if args.action == "merge":
        return _replay_merge(args)
    if args.folders:
        raise ListenerError(f"replay: unexpected argument(s) {' '.join(args.folders)}")
    for flag, value in (("--config", args.config), ("--from", args.start), ("--to", args.end)):
        if not value:
            raise ListenerError(f"replay needs {flag}")
    files = _config_files(args.config)
    if args.shard is None and len(files) == 1:
        args.config = str(files[0])
        return run_replay(args, say=lambda text: print(text, flush=True),
                          make_progress=ProgressBar if sys.stderr.isatty() else None)
    return _replay_sharded(args, files)


def _config_files(paths: list[str]) -> list[Path]:
    from listener.runtime.roster import config_files

    return config_files(paths)


def _replay_sharded(args: argparse.Namespace, files: list[Path]) -> int:
    from listener.replay.runner import parse_time
    from listener.replay.shard import parse_chunk, run_parts, shard_parts, split
    from listener.runtime.roster import Shard, load_roster

    if not args.out:
        raise ListenerError("a replay of several stations or with --shard needs --out DIR "
                            "(shared by every shard)")
    roster = load_roster(files)
    start, end = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    clip = max(e.cfg.detection.clip_s for e in roster.stations)
    parts = split([(e.cfg.station.id, str(e.path)) for e in roster.stations], start, end,
                  parse_chunk(args.chunk), timedelta(seconds=clip))
    mine = shard_parts(parts, Shard.parse(args.shard) if args.shard else None)
    print(f"{len(mine)} of {len(parts)} part(s) in this shard", flush=True)
    return run_parts(mine, Path(args.out), concurrency=args.concurrency,
                     say=lambda text: print(text, flush=True))


def _replay_merge(args: argparse.Namespace) -> int:
    from listener.replay.shard import merge

    if len(args.folders) != 1:
        raise ListenerError("usage: listener replay merge OUT (the --out of the shards)")
    merged = merge(Path(args.folders[0]))
    text = json.dumps(merged.to_json(), indent=1)
    (Path(args.folders[0]) / "merged.json").write_text(text + "\n", encoding="utf-8")
    print(f"{merged.parts} part(s) of {len(merged.stations)} station(s) joined, none missing "
          f"or doubled: {len(merged.detections)} detection(s); "
          f"{Path(args.folders[0]) / 'merged.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="listener", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"listener {__version__}")
    p.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING (default from config)")
    p.add_argument("--log-format", choices=["text", "json"], default=None)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_demo(sub)
    _add_replay(sub)
    _add_detect(sub)
    _add_features(sub)
    _add_check_config(sub)
    _add_convert_fastai(sub)
    _add_quality_commands(sub)
    return p


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("run", help="follow live hydrophone streams (the daemon)")
    s.add_argument("--config", required=True, action="append",
                   help="station YAML file, or a folder of them; repeatable (one process, "
                        "one model shared by the stations)")
    s.add_argument("--keep-going", action="store_true",
                   help="skip a station whose config or start fails (default: refuse to start)")
    s.add_argument("--shard", default=None, metavar="I/N",
                   help="run only part I of N of the stations (e.g. a StatefulSet ordinal)")
    s.add_argument("--quorum", default="1", metavar="N|P%",
                   help="/readyz is ready while this many stations are current (default 1)")
    s.add_argument("--device", default=None,
                   help="override model.device of every station (e.g. cuda on a GPU node)")
    s.set_defaults(func=cmd_run)


def _add_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("demo", help="serve bundled recordings as live HLS and run the daemon")
    s.add_argument("--duration", type=float, default=90.0, help="seconds to run (default 90)")
    s.add_argument("--weights", default=None, help="a checkpoint (default: the bundled demo model, "
                   "trained on a small open set)")
    s.add_argument("--port", type=int, default=9108, help="metrics port (default 9108)")
    s.set_defaults(func=cmd_demo)


def _add_replay(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("replay", help="score a past time range from the archive "
                       "(`replay merge OUT` joins sharded parts)")
    s.add_argument("action", nargs="?", choices=["merge"], help=argparse.SUPPRESS)
    s.add_argument("folders", nargs="*", help=argparse.SUPPRESS)
    s.add_argument("--config", action="append",
                   help="station YAML file or folder; repeatable")
    s.add_argument("--from", dest="start", help="ISO 8601, e.g. 2020-09-01T15:13-07:00")
    s.add_argument("--to", dest="end")
    s.add_argument("--shard", default=None, metavar="I/N",
                   help="run part I of N of (stations x chunks), e.g. an Indexed Job's index")
    s.add_argument("--chunk", default="1d", help="time per part when sharding (default 1d)")
    s.add_argument("--out", default=None, help="folder for the results and resume state")
    s.add_argument("--concurrency", type=int, default=4, help="segments fetched ahead")
    add_precision_flag(s)
    s.set_defaults(func=cmd_replay)


def _add_detect(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("detect", help="score recordings (any format ffmpeg reads)")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.add_argument("--config", default=None)
    s.add_argument("--weights", default=None, help="checkpoint (.pt, .pth, .safetensors)")
    s.add_argument("--json", default=None, metavar="OUT",
                   help="write results as JSON ('-' = stdout)")
    s.add_argument("--quiet", action="store_true", help="no summary, no progress bar")
    s.add_argument("--models", nargs="?", const="", default=None, metavar="ID,...",
                   help="score with every model of the config's 'models:' (or those named) "
                        "and compare them side by side")
    add_precision_flag(s)
    _add_label_export_flags(s)
    s.set_defaults(func=cmd_detect)


def _add_features(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("features", help="write the exact model input of one window as .npy")
    s.add_argument("file")
    s.add_argument("--start", type=float, required=True, help="window start, seconds")
    s.add_argument("--duration", type=float, default=None, help="window length (default: config)")
    s.add_argument("--out", required=True)
    s.add_argument("--config", default=None)
    s.set_defaults(func=cmd_features)


def _add_check_config(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("check-config", help="validate a station YAML file")
    s.add_argument("file")
    s.set_defaults(func=cmd_check_config)


def _add_convert_fastai(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("convert-fastai", help="extract weights from a fastai export (model.pkl)")
    s.add_argument("pkl")
    s.add_argument("out", help="output .safetensors")
    s.add_argument("--architecture", choices=["auto", "resnet18", "resnet50"], default="auto")
    s.add_argument("--allow-module", action="append", default=[], metavar="PACKAGE",
                   help="also record (never run) classes of this package, e.g. a custom "
                        "fastai extension; repeatable")
    s.set_defaults(func=cmd_convert_fastai)


def _add_label_export_flags(s: argparse.ArgumentParser) -> None:
    s.add_argument("--raven", default=None, metavar="OUT",
                   help="write detections as a Raven Pro selection table")
    s.add_argument("--audacity", default=None, metavar="OUT",
                   help="write detections as an Audacity label track (with several files: "
                        "OUT is a folder, one <file stem>.txt each)")


def _add_quality_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``train`` and ``evaluate`` (their code lives in listener.cli.quality)."""
    from listener.cli.quality import add_evaluate_parser, add_train_parser

    add_train_parser(sub)
    add_evaluate_parser(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from listener.runtime.logs import setup_logging

    quiet_default = args.command in ("detect", "features", "check-config", "convert-fastai",
                                     "evaluate")
    setup_logging(args.log_level or ("WARNING" if quiet_default else "INFO"),
                  args.log_format or "text")
    try:
        return int(args.func(args) or 0)
    except ListenerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
