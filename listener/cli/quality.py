"""``listener train`` and ``listener evaluate``: the command-line side (printing lives here)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from listener.cli.options import add_precision_flag, scoring_config

if TYPE_CHECKING:
    from listener.training.run import TrainOutcome

EXIT_FAILED = 1


class _StepBar:
    """``label [#####     ] 40/120 status`` on stderr when it is a terminal, else a log line
    every ``every`` steps."""

    def __init__(self, label: str, every: int = 6) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.every = every
        self.start = time.monotonic()

    def __call__(self, done: int, total: int, status: str) -> None:
        elapsed = time.monotonic() - self.start
        eta = elapsed / max(done, 1) * (total - done)
        bar = "#" * int(30 * done / max(total, 1))
        text = f"{self.label} [{bar:<30}] {done}/{total} {status} ETA {eta:4.0f} s"
        if self.tty:
            sys.stderr.write("\r" + text)
            if done == total:
                sys.stderr.write("\n")
        elif done % self.every == 0 or done == total:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()


def cmd_train(args: argparse.Namespace) -> int:
    from listener.config import default_config, load_config
    from listener.training.augment import AugmentConfig
    from listener.training.cache import DEFAULT_VARIANTS, AudioCache, default_cache_dir
    from listener.training.run import TrainInputs, parse_duration, run_training
    from listener.training.trainer import INIT_LR, SCRATCH_LR, TrainConfig

    started = time.monotonic()
    cfg = load_config(args.config) if args.config else default_config()
    lr = args.lr if args.lr is not None else (INIT_LR if args.init else SCRATCH_LR)
    tcfg = TrainConfig(architecture=args.architecture, epochs=args.epochs,
                       steps_per_epoch=args.steps, batch_size=args.batch_size, lr=lr,
                       seed=args.seed, val_seed=args.val_seed,
                       val_fraction=args.val_fraction, patience=args.patience,
                       val_per_call_file=args.val_per_call_file,
                       val_per_background_file=args.val_per_background_file,
                       window_s=cfg.detection.window_s, init=args.init,
                       train_from=args.train_from, ema_decay=args.ema_decay,
                       confirm_draws=args.confirm_draws, band_norm=args.band_norm,
                       teacher=args.teacher, teacher_weight=args.teacher_weight,
                       time_budget_s=parse_duration(args.time_budget) if args.time_budget
                       else None,
                       augment=AugmentConfig(source_power=args.source_power,
                                             snr_db=tuple(args.snr_db),
                                             gain_db=tuple(args.gain_db),
                                             eq_db=args.eq_db,
                                             aac_p=0.0 if args.no_aac else AugmentConfig.aac_p))
    inputs = TrainInputs(data=[Path(d) for d in args.data],
                         backgrounds=[Path(b) for b in args.background],
                         screen_weights=args.screen_weights,
                         background_max_score=args.background_max_score)
    if args.reviews:
        from listener.training.reviews import load_reviews
        inputs.reviews, inputs.review_counts, inputs.review_problems = load_reviews(
            [Path(r) for r in args.reviews], [Path(c) for c in args.review_clips],
            cfg.frontend.sample_rate)
    if not (inputs.data or inputs.reviews or inputs.backgrounds):
        print("error: give DATA, --reviews or --background", file=sys.stderr)
        return EXIT_FAILED
    cache = AudioCache(Path(args.cache) if args.cache else default_cache_dir(),
                       cfg.frontend.sample_rate, () if args.no_aac else DEFAULT_VARIANTS)
    out = Path(args.out)
    ckpt = Path(args.checkpoint) if args.checkpoint else out.with_name(out.name + ".ckpt.pt")
    print(f"training {tcfg.architecture} (lr {lr:g}); checkpoint {ckpt}", file=sys.stderr)
    outcome = run_training(inputs, cfg, tcfg, out, cache, ckpt, args.half,
                           keep_checkpoint=args.keep_checkpoint, progress=_StepBar("train"),
                           started=started, model_id=args.model_id)
    _report_training(outcome)
    return EXIT_FAILED if outcome.problems and args.strict else 0


def _report_training(outcome: TrainOutcome) -> None:
    """A run's warnings and fine-tune check on stderr, then what it wrote and kept."""
    from listener.training.card import NOTHING_LEARNT

    for p in outcome.problems:
        print(f"warning: {p}", file=sys.stderr)
    r = outcome.result
    if r.learnt_nothing:
        print(f"warning: {NOTHING_LEARNT}", file=sys.stderr)
    kept = " (no epoch beat the starting weights: they were kept)" if outcome.kept_start else ""
    if outcome.check is not None:
        print(f"fine-tune check: {outcome.check.text()}", file=sys.stderr)
        if not outcome.check.holds:
            kept = " (the starting weights: the gain did not hold on fresh draws)"
    print(f"wrote {outcome.out} and {outcome.card}: epoch {r.best_epoch}{kept}, validation "
          f"balanced ROC-AUC {r.best_score:.3f}, PR-AUC {r.best_pr_auc:.3f}, "
          f"{r.seconds / 60:.1f} min, stopped by {r.stop}")


def add_train_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("train", help="train or fine-tune the network on labelled clips")
    s.add_argument("data", metavar="DATA", nargs="*", help="folder with one sub-folder per "
                   "class (calls/, background/ or nocalls/), each holding sources' folders")
    s.add_argument("--out", required=True, help="output .safetensors (a model card .md "
                   "is written next to it)")
    s.add_argument("--config", default=None, help="station YAML (its frontend and window)")
    s.add_argument("--architecture", choices=["resnet18", "resnet50"], default="resnet18",
                   help="the network to train (default resnet18)")
    s.add_argument("--band-norm", action="store_true",
                   help="from scratch: subtract each mel band's median over the window "
                        "before the network, so gain and steady noise colour cancel "
                        "(recorded in the weights; a fine-tune keeps its start's input)")
    s.add_argument("--init", default=None, metavar="W", help="fine-tune from these weights "
                   "(scored as epoch 0; never replaced by worse ones; the files they record "
                   "having trained on stay out of validation)")
    s.add_argument("--teacher", default=None, metavar="W",
                   help="also learn each window's call probability from these weights (one "
                        "network or a `listener ensemble`): one network's cost, part of the "
                        "teacher's quality; the files it trained on stay out of validation")
    s.add_argument("--teacher-weight", type=float, default=0.5, metavar="W",
                   help="with --teacher: its share of each window's target, the label's "
                        "being 1 - W (default 0.5)")
    s.add_argument("--train-from", default=None, choices=["layer1", "layer2", "layer3",
                                                          "layer4", "head"],
                   help="with --init: freeze the layers before this one (cheaper steps)")
    s.add_argument("--background", action="append", default=[], metavar="DIR",
                   help="unlabelled site audio: mixing beds and negatives (repeatable)")
    s.add_argument("--background-max-score", type=float, default=0.9, metavar="S",
                   help="leave out site windows the starting model scores above S")
    s.add_argument("--screen-weights", default=None, metavar="W",
                   help="model that screens --background audio (default: --init)")
    s.add_argument("--reviews", action="append", default=[], metavar="FILE",
                   help="console export (.json) or <events>.reviews.jsonl (repeatable)")
    s.add_argument("--review-clips", action="append", default=[], metavar="DIR",
                   help="folder of the reviewed clips (default: next to the reviews file)")
    _add_recipe_arguments(s)
    s.set_defaults(func=cmd_train)
    add_collect_parser(sub)  # registered with train: its companion for --background


def _add_recipe_arguments(s: argparse.ArgumentParser) -> None:
    """How ``train`` trains: steps, validation, augmentation, output."""
    from listener.training.augment import AugmentConfig
    from listener.training.validation import POOLED_DRAWS

    s.add_argument("--epochs", type=int, default=10, help="at most this many (default 10)")
    s.add_argument("--steps", type=int, default=12, help="batches per epoch")
    s.add_argument("--batch-size", type=int, default=16, help="windows per batch (default 16)")
    s.add_argument("--lr", type=float, default=None, help="peak learning rate (default "
                   "2e-3, or 2e-4 with --init)")
    s.add_argument("--time-budget", default=None, metavar="T",
                   help="stop cleanly before an epoch would overrun T (45m, 1h, 900s)")
    s.add_argument("--seed", type=int, default=0, help="seed of the split, the batches and "
                   "every generator (default 0)")
    s.add_argument("--val-seed", type=int, default=None, metavar="N",
                   help="seed of the validation windows drawn from the held-out files "
                        "(default: --seed). Give a fine-tune another one when its start was "
                        "chosen on this recipe's windows: it scores optimistically on the "
                        "draw it was chosen on")
    s.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of each source's files held out for validation, above 0 and "
                        "below 1 (default 0.2)")
    s.add_argument("--val-per-call-file", type=int, default=2,
                   help="validation windows drawn from each held-out call file (default 2)")
    s.add_argument("--val-per-background-file", type=int, default=6,
                   help="validation windows drawn from each held-out background file "
                        "(default 6)")
    s.add_argument("--source-power", type=float, default=0.25, help="a source with n files "
                   "is drawn with weight n ** P (0: sources equal, 1: files equal)")
    s.add_argument("--snr-db", type=float, nargs=2, default=AugmentConfig.snr_db,
                   metavar=("LO", "HI"), help="signal-to-noise range of calls mixed into "
                   "beds, dB over the call's extent (default -10 15: live streams)")
    s.add_argument("--gain-db", type=float, nargs=2, default=AugmentConfig.gain_db,
                   metavar=("LO", "HI"), help="window level range, dB re 0.05 RMS (default "
                   "-55 25: the levels of live streams; the spectrogram is not normalised)")
    s.add_argument("--eq-db", type=float, default=0.0, metavar="DB", help="a random smooth "
                   "equaliser on half of the windows, +-DB at 100 Hz, 400 Hz, 1.6 kHz and "
                   "6.4 kHz (hydrophone responses differ; default 0: off)")
    s.add_argument("--patience", type=int, default=4, help="epochs without a validation gain "
                   "before stopping, counted from the end of the learning rate's warm-up")
    s.add_argument("--ema-decay", type=float, default=0.0, metavar="D",
                   help="score and keep a moving average of the weights, decay D per step "
                        "(e.g. 0.99; default 0: off)")
    s.add_argument("--confirm-draws", type=int, default=POOLED_DRAWS, metavar="N",
                   help="with --init: score the kept epoch and the starting weights again on "
                        f"N fresh draws of held-out windows and keep the start unless the gain "
                        f"holds (default {POOLED_DRAWS}; 0: off)")
    s.add_argument("--cache", default=None, metavar="DIR", help="decoded-audio cache "
                   "(default ~/.cache/listener/train-audio)")
    s.add_argument("--no-aac", action="store_true", help="no AAC round-trip augmentation")
    s.add_argument("--checkpoint", default=None,
                   help="resume/save state here (default OUT.ckpt.pt); one left by "
                        "another command is refused")
    s.add_argument("--keep-checkpoint", action="store_true",
                   help="keep the checkpoint after a successful run")
    s.add_argument("--half", action="store_true", help="store float16 weights")
    s.add_argument("--model-id", default=None, metavar="ID", help="the id the file declares "
                   "(metadata and card): what the console and /metrics call the model")
    s.add_argument("--strict", action="store_true", help="exit 1 if any file was skipped")


def cmd_collect(args: argparse.Namespace) -> int:
    from listener.config import load_config
    from listener.replay.runner import parse_time
    from listener.training.collect import collect

    cfg = load_config(args.config)
    start, end = parse_time(args.start, "--from"), parse_time(args.end, "--to")
    s = collect(cfg, start, end, Path(args.out), args.max_mb, args.max_score)
    print(f"wrote {len(s.files)} FLAC file(s), {s.seconds_kept:.0f} s of "
          f"{s.seconds_scored:.0f} s scored ({s.bytes / 2**20:.1f} MB) to {args.out}; "
          f"{s.windows_above} window(s) above {args.max_score} left out"
          + ("; stopped at --max-mb" if s.full else ""))
    return 0


def add_collect_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("collect", help="save a station's low-scoring archive audio as FLAC "
                       "(site noise for 'listener train --background')")
    s.add_argument("--config", required=True, help="station YAML (orcasound stream, model)")
    s.add_argument("--from", dest="start", required=True, metavar="ISO",
                   help="range start, ISO 8601 with a zone")
    s.add_argument("--to", dest="end", required=True, metavar="ISO", help="range end")
    s.add_argument("--out", required=True, metavar="DIR", help="folder for the FLAC files")
    s.add_argument("--max-mb", type=float, default=200.0, metavar="N",
                   help="stop after N MB of FLAC")
    s.add_argument("--max-score", type=float, default=0.5, metavar="S",
                   help="keep only stretches whose every window scores at most S")
    s.set_defaults(func=cmd_collect)


def _score_models(args: argparse.Namespace, cfg: Any, labels: Any,
                  problems: list[Any]) -> list[Any]:
    """``--weights`` models (ResNet checkpoints), else every model of the config."""
    from listener.quality.run import score_config_models, score_weights

    if args.weights:
        out = []
        for k, w in enumerate(args.weights):
            run_problems: list[Any] = []
            out.append(score_weights(k, w, cfg, labels.items, run_problems))
            if k == 0:  # every model meets the same files: report their problems once
                problems.extend(run_problems)
        return out
    if args.config:
        return score_config_models(cfg, labels.items, problems)
    return []


def _plots(out: Path, curves: dict[str, list[Any]], det: Any,
           per_label: list[tuple[str, dict[str, Any]]]) -> list[Path]:
    from listener.quality import plots

    paths = []
    for level, cs in curves.items():
        th = det.local_threshold if level == "windows" else None
        paths += plots.write_all(out, level, cs, th)
    for name, labs in per_label:
        safe = "".join(ch if ch.isalnum() else "_" for ch in name)
        paths += plots.write_all(out, "windows", [d["curve"] for d in labs.values()],
                                 det.local_threshold, prefix=f"labels_{safe}_")
    return paths


def _write_plots(out: Path, curves: dict[str, list[Any]], det: Any,
                 per_label: list[tuple[str, dict[str, Any]]]) -> None:
    from listener.quality import plots

    if plots.available():
        _plots(out, curves, det, per_label)
        print(f"wrote {out / 'evaluation.json'}, {out / 'scores.csv'} and PNG plots in {out}")
    else:
        print(f"wrote {out / 'evaluation.json'} and {out / 'scores.csv'}; no plots: matplotlib "
              f"is not installed ({plots.EXTRA})")


def _reports(scored: list[Any], target: Any, args: argparse.Namespace
             ) -> tuple[dict[str, Any], list[str], dict[str, list[Any]], list[Any]]:
    """Each model's report, summary lines, curves for the plots and per-label figures."""
    from listener.quality import plots
    from listener.quality.report import summary_lines
    from listener.quality.run import per_label_report, report_model

    models: dict[str, Any] = {}
    lines: list[str] = []
    curves: dict[str, list[Any]] = {"windows": [], "clips": []}
    per_label = []
    for ms in scored:
        rep, windows, clips = report_model(ms, target, args.bootstrap, args.seed)
        if ms.per_label:
            labs = per_label_report(ms, args.bootstrap, args.seed)
            rep["labels"] = {k: d["metrics"] for k, d in labs.items()}
            per_label.append((ms.name, labs))
        models[ms.name] = rep
        lines.extend(summary_lines(ms.name, rep))
        for ap in rep.get("short_call_clips", []):
            lines.append(f"  set apart: call clip {ap['file']} at {ap['start_s']} s is "
                         f"{ap['duration_s']} s, shorter than global_threshold units: the rule "
                         f"can never detect it (max window score {ap['max_score']})")
        curves["windows"].append(plots.Curve(ms.name, windows.labels, windows.scores))
        curves["clips"].append(plots.Curve(ms.name, clips.labels, clips.scores))
    return models, lines, curves, per_label


def cmd_evaluate(args: argparse.Namespace) -> int:
    from listener.config import default_config, load_config, with_precision
    from listener.quality.labels import LabelProblem, read_labels
    from listener.quality.run import (
        bootstrap_warning,
        levels_warning,
        promote_line,
        trained_on_warning,
        write_table,
    )

    cfg = with_precision(load_config(args.config) if args.config else default_config(),
                         args.precision)
    labels = read_labels(Path(args.data), args.positive, args.negative)
    target = (("precision", args.target_precision) if args.target_precision is not None
              else ("recall", args.target_recall) if args.target_recall is not None else None)
    if not args.weights and cfg.model.weights:
        args.weights = [] if cfg.models is not None else [str(cfg.model.weights)]
    if not args.weights and not args.config:
        # The bundled demo model, with the demo's one-line notice on stderr.
        args.weights = [str(scoring_config(cfg).model.weights)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problems: list[LabelProblem] = list(labels.problems)
    scored = _score_models(args, cfg, labels, problems)
    models, lines, curves, per_label = _reports(scored, target, args)
    for cls, what in ((True, "calls"), (False, "no-call")):
        if not any(it.label is cls or it.selections for it in labels.items):
            problems.append(LabelProblem(args.data, None, f"no {what} examples: "
                                         "precision/recall/AUC are undefined"))
    warnings = [w for w in [bootstrap_warning(scored[0].files) if scored else None,
                            *(trained_on_warning(ms, labels.items) for ms in scored),
                            *(levels_warning(ms) for ms in scored)] if w]
    write_table(out / "scores.csv", [(ms.name, ms.files) for ms in scored])
    doc = {"data": args.data, "models": models, "problems": [str(p) for p in problems],
           "warnings": warnings}
    (out / "evaluation.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    for text in [str(p) for p in problems] + warnings:
        print(f"warning: {text}", file=sys.stderr)
    print("\n".join(lines))
    if len(models) == 2:
        print(promote_line(*list(models.items())))
    _write_plots(out, curves, cfg.detection, per_label)
    if problems:
        print(f"{len(problems)} label problem(s): the rest was evaluated", file=sys.stderr)
        return EXIT_FAILED
    return 0


def add_evaluate_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("evaluate", help="measure detection quality on labelled audio")
    s.add_argument("data", metavar="DATA", help="class folders, a Raven/Audacity table, "
                   "OrcaHello .json records, or a folder of them")
    s.add_argument("--config", default=None, help="station YAML (frontend, thresholds)")
    s.add_argument("--weights", action="append", default=[], metavar="W",
                   help="a checkpoint; repeat to compare models on the same windows (two: "
                   "a promote-or-not line). Without it, every model of --config")
    s.add_argument("--out", default="evaluation", help="folder for evaluation.json and plots")
    t = s.add_mutually_exclusive_group()
    t.add_argument("--target-precision", type=float, default=None, metavar="P",
                   help="recommend the (local, global) thresholds reaching this precision")
    t.add_argument("--target-recall", type=float, default=None, metavar="R",
                   help="recommend the (local, global) thresholds reaching this recall")
    s.add_argument("--positive", action="append", default=[], metavar="CLASS",
                   help="an extra folder/annotation name meaning 'call'")
    s.add_argument("--negative", action="append", default=[], metavar="CLASS",
                   help="an extra folder/annotation name meaning 'no call'")
    s.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws for the "
                   "95%% intervals")
    s.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    add_precision_flag(s)
    s.set_defaults(func=cmd_evaluate)
