"""Command line: ``listener run | demo | replay | detect | features | check-config | ...``.

User errors (a bad config, a missing file, mismatched weights) print one clear
message and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import timedelta
from pathlib import Path

from listener import __version__
from listener.cli.options import UsageError, add_precision_flag, scoring_config
from listener.cli.progress import ProgressBar
from listener.config import Config, default_config, load_config, with_precision
from listener.errors import ListenerError

log = logging.getLogger("listener.cli.main")

DESCRIPTION = ("Detect killer-whale calls: follow live hydrophone streams (run, demo), score "
               "a past range of the archive (replay) or recordings (detect), measure and train "
               "models (evaluate, train).")
EXIT_USAGE = 2
EXIT_FAILED = 1


def _load(args: argparse.Namespace, *, score: bool = False) -> Config:
    """The config of ``--config`` (or the defaults); to ``score``, with weights resolved.

    Scoring without ``--weights`` or ``model.weights`` uses the bundled demo
    model and says so on stderr (:func:`listener.cli.options.scoring_config`).
    """
    cfg = load_config(args.config) if getattr(args, "config", None) else default_config()
    if score:
        cfg = scoring_config(cfg, getattr(args, "weights", None))
    return with_precision(cfg, getattr(args, "precision", None))


def cmd_detect(args: argparse.Namespace) -> int:
    from listener.cli.detect import cmd_detect as detect

    return detect(args, _load(args, score=True))


def cmd_features(args: argparse.Namespace) -> int:
    from listener.cli.features import window_features

    cfg = _load(args)
    feats = window_features(args.file, args.start, args.duration, cfg)
    import numpy as np

    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, feats)
    except OSError as err:
        raise ListenerError(f"cannot write {out}: {err.strerror or err}") from err
    print(f"wrote {args.out}: shape {tuple(feats.shape)} {feats.dtype}, "
          f"dB range {float(feats.min()):.2f}..{float(feats.max()):.2f}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from listener.runtime.preflight import preflight
    from listener.runtime.roster import plan_file

    # What `run` checks before it loads the network (models planned, then the
    # start-up checks), with the same messages.
    cfg = plan_file(args.file).cfg
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


def cmd_ensemble(args: argparse.Namespace) -> int:
    from listener.model.ensemble import write_ensemble

    summary = write_ensemble(args.weights, args.out, model_id=args.id)
    inputs = ", ".join(f"{m.name}{' (band-normalised)' if b else ''}"
                       for m, b in zip(summary.members, summary.band_norm, strict=True))
    print(f"wrote {summary.path}: the average of {len(summary.members)} {summary.architecture} "
          f"networks ({inputs}), {summary.parameter_count} parameters, sha256 "
          f"{summary.sha256[:12]}; it costs {len(summary.members)} networks' compute per window")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from listener.runtime.logs import setup_logging
    from listener.runtime.readiness import parse_quorum
    from listener.runtime.roster import Shard, load_roster
    from listener.runtime.runner import run_stations

    shard = Shard.parse(args.shard) if args.shard else None
    roster = load_roster(args.config, keep_going=args.keep_going, shard=shard,
                         device=args.device)
    first = roster.stations[0].cfg
    single = len(roster.stations) == 1
    setup_logging(args.log_level or first.logging.level, args.log_format or first.logging.format,
                  station=first.station.id if single else None)
    if not single:
        log.info("running %d stations%s: %s", len(roster.stations),
                 f" (shard {shard})" if shard else "",
                 ", ".join(e.cfg.station.id for e in roster.stations))
    quorum = parse_quorum(args.quorum, len(roster.stations))
    plans = [e.plan for e in roster.stations]
    return run_stations(plans, quorum=quorum, keep_going=args.keep_going,
                        skipped=roster.skipped)


def cmd_demo(args: argparse.Namespace) -> int:
    from listener.demo.run import run_demo

    return run_demo(lambda text: print(text, flush=True), duration_s=args.duration,
                    weights=args.weights, port=args.port, config=args.config, keep=args.keep)


def cmd_replay(args: argparse.Namespace) -> int:
    from listener.replay.runner import run_replay

    if args.action == "merge":
        return _replay_merge(args)
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

    out = Path(args.out_folder)
    merged = merge(out)
    text = json.dumps(merged.to_json(), indent=1)
    (out / "merged.json").write_text(text + "\n", encoding="utf-8")
    print(f"{merged.parts} part(s) of {len(merged.stations)} station(s) joined, none missing "
          f"or doubled: {len(merged.detections)} detection(s); {out / 'merged.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="listener", description=DESCRIPTION,
                                epilog="'listener COMMAND --help' gives a command's options.")
    p.add_argument("--version", action="version", version=f"listener {__version__}")
    p.add_argument("--log-level", default=None, type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="DEBUG, INFO, WARNING or ERROR (default from config)")
    p.add_argument("--log-format", choices=["text", "json"], default=None,
                   help="log lines as text or one JSON object each (default from config)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="one of:")
    _add_run(sub)
    _add_demo(sub)
    _add_replay(sub)
    _add_detect(sub)
    _add_features(sub)
    _add_check_config(sub)
    _add_convert_fastai(sub)
    _add_ensemble(sub)
    _add_quality_commands(sub)
    return p


def _add_run(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("run", help="follow live hydrophone streams (the daemon)")
    s.add_argument("--config", required=True, action="append", metavar="FILE|DIR",
                   help="station YAML file, or a folder of them; repeatable (one process, "
                        "one model shared by the stations)")
    s.add_argument("--keep-going", action="store_true",
                   help="skip a station whose config or start fails (default: refuse to start)")
    s.add_argument("--shard", default=None, metavar="I/N",
                   help="run only part I of N of the stations (e.g. a StatefulSet ordinal)")
    s.add_argument("--quorum", default="1", metavar="N|P%",
                   help="/readyz is ready while this many stations are current (default 1)")
    s.add_argument("--device", default=None, choices=["auto", "cpu", "cuda"],
                   help="override model.device of every station (e.g. cuda on a GPU node)")
    s.set_defaults(func=cmd_run)


def _add_demo(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("demo", help="serve bundled recordings as live HLS and run the daemon")
    s.add_argument("--duration", type=float, default=90.0, metavar="S",
                   help="seconds to run (default 90)")
    s.add_argument("--weights", default=None, help="a checkpoint (default: the config's, else "
                   "the bundled demo model, trained on a small open set)")
    s.add_argument("--config", default=None, metavar="FILE",
                   help="a station YAML whose station the demo node serves (its models, "
                        "detection and frontend; the stream, outputs, state and port are "
                        "the demo's)")
    s.add_argument("--port", type=int, default=9108,
                   help="console and metrics port (default 9108; 0 = a free one, then told)")
    s.add_argument("--keep", action="store_true",
                   help="keep the working folder (segments, events, clips, state) at the end")
    s.set_defaults(func=cmd_demo)


def _add_replay(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("replay", help="score a past time range from the archive "
                       "('replay merge OUT' joins sharded parts)")
    s.add_argument("--config", action="append", metavar="FILE|DIR",
                   help="station YAML file or folder; repeatable")
    s.add_argument("--from", dest="start", metavar="ISO",
                   help="start time, ISO 8601, e.g. 2020-09-01T15:13-07:00")
    s.add_argument("--to", dest="end", metavar="ISO",
                   help="end time, ISO 8601, e.g. 2020-09-01T16:00-07:00")
    s.add_argument("--shard", default=None, metavar="I/N",
                   help="run part I of N of (stations x chunks), e.g. an Indexed Job's index")
    s.add_argument("--chunk", default="1d", help="time per part when sharding (default 1d)")
    s.add_argument("--out", default=None, metavar="DIR",
                   help="folder for the results and resume state")
    s.add_argument("--concurrency", type=int, default=4, help="segments fetched ahead")
    add_precision_flag(s)
    s.set_defaults(func=cmd_replay, action=None)
    acts = s.add_subparsers(dest="action", metavar="[merge]",
                            help="'merge OUT': join the parts of a sharded replay")
    m = acts.add_parser("merge", help="join the parts of a sharded replay into OUT/merged.json",
                        description="Join the parts written by 'listener replay --shard I/N "
                                    "--out OUT' into OUT/merged.json, checking that no part "
                                    "is missing or doubled.")
    m.add_argument("out_folder", metavar="OUT", help="the --out folder shared by the shards")
    m.set_defaults(func=cmd_replay)


def _add_detect(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from listener.cli.detect import add_label_export_flags

    s = sub.add_parser("detect", help="score recordings (any format ffmpeg reads)")
    s.add_argument("files", nargs="+", metavar="FILE",
                   help="recordings: wav, flac, mp3, MPEG-TS ... (whatever ffmpeg reads)")
    s.add_argument("--config", default=None, metavar="FILE",
                   help="station YAML (model, frontend, decision rule; default: the defaults)")
    s.add_argument("--weights", default=None, help="checkpoint (.pt, .pth, .safetensors; "
                   "default: the config's, else the bundled demo model)")
    s.add_argument("--json", default=None, metavar="OUT",
                   help="write results as JSON ('-' = stdout, which then carries the JSON "
                        "alone: the summary goes to stderr)")
    s.add_argument("--quiet", action="store_true", help="no summary, no progress bar")
    s.add_argument("--models", nargs="?", const="", default=None, metavar="ID,...",
                   help="score with every model of the config's 'models:' (or those named) "
                        "and compare them side by side")
    add_precision_flag(s)
    add_label_export_flags(s)
    s.set_defaults(func=cmd_detect)


def _add_features(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("features", help="write the exact model input of one window as .npy")
    s.add_argument("file", metavar="FILE", help="a recording (any format ffmpeg reads)")
    s.add_argument("--start", type=float, required=True, help="window start, seconds")
    s.add_argument("--duration", type=float, default=None, help="window length (default: config)")
    s.add_argument("--out", required=True, metavar="X.npy", help="the .npy file to write")
    s.add_argument("--config", default=None, metavar="FILE",
                   help="station YAML (its frontend and window; default: the defaults)")
    s.set_defaults(func=cmd_features)


def _add_check_config(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("check-config", help="validate a station YAML file")
    s.add_argument("file", metavar="FILE", help="the station YAML file to check")
    s.set_defaults(func=cmd_check_config)


def _add_convert_fastai(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("convert-fastai", help="extract weights from a fastai export (model.pkl)")
    s.add_argument("pkl", metavar="PKL", help="the fastai export (model.pkl); never unpickled")
    s.add_argument("out", metavar="OUT", help="output .safetensors")
    s.add_argument("--architecture", choices=["auto", "resnet18", "resnet50"], default="auto",
                   help="the network in the export (default auto: read from its weights)")
    s.add_argument("--allow-module", action="append", default=[], metavar="PACKAGE",
                   help="also record (never run) classes of this package, e.g. a custom "
                        "fastai extension; repeatable")
    s.set_defaults(func=cmd_convert_fastai)


def _add_ensemble(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("ensemble", help="join networks into one averaged-ensemble weights file",
                       description="Write one weights file that scores the mean of the given "
                                   "networks' call probabilities. Every model path takes it; "
                                   "it costs the sum of its networks' compute per window.")
    s.add_argument("weights", nargs="+", metavar="WEIGHTS",
                   help="two to eight weights files of one architecture (any layout)")
    s.add_argument("--out", required=True, metavar="FILE", help="output .safetensors")
    s.add_argument("--id", default=None, metavar="MODEL_ID",
                   help="the model id its metadata declares (default: the output's name)")
    s.set_defaults(func=cmd_ensemble)


def _add_quality_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``train`` and ``evaluate`` (their code lives in listener.cli.quality)."""
    from listener.cli.quality import add_evaluate_parser, add_train_parser

    add_train_parser(sub)
    add_evaluate_parser(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from listener.runtime.logs import setup_logging

    quiet_default = args.command in ("detect", "features", "check-config", "convert-fastai",
                                     "ensemble", "evaluate")
    setup_logging(args.log_level or ("WARNING" if quiet_default else "INFO"),
                  args.log_format or "text")
    try:
        return int(args.func(args) or 0)
    except UsageError as err:
        print(f"listener {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ListenerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
