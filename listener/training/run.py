"""One ``listener train`` run, end to end: gather data, screen site audio, split, train, write.

Kept apart from the command line so tests and scripts drive the same steps;
the CLI only parses flags and prints.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from listener.config import Config
from listener.config.models import require_model_id
from listener.digests import file_digest
from listener.errors import ListenerError
from listener.model.ensemble import load_network
from listener.model.frontend import Frontend
from listener.model.inspect import inspect_checkpoint
from listener.model.lineage import Lineage, digest, lineage_of
from listener.model.metadata import safetensors_metadata
from listener.quality.labels import LabelProblem, read_labels
from listener.training import resume
from listener.training.cache import AudioCache
from listener.training.card import model_card, save_weights, write_card
from listener.training.confirm import Confirmation, confirm, needs_check, settle
from listener.training.data import NothingHeldOut, Recording, load_recordings, split_by_file
from listener.training.site import SiteCount, load_site_audio
from listener.training.trainer import (
    Progress,
    TrainConfig,
    TrainResult,
    initial_model,
    require_start_input,
    train,
)

log = logging.getLogger(__name__)


@dataclass
class TrainInputs:
    """Where the examples come from (any combination; at least calls and negatives in all)."""

    data: list[Path] = field(default_factory=list)
    backgrounds: list[Path] = field(default_factory=list)
    reviews: list[Recording] = field(default_factory=list)
    review_counts: dict[str, int] = field(default_factory=dict)
    review_problems: list[LabelProblem] = field(default_factory=list)
    screen_weights: str | None = None  # scores site audio (default: --init)
    background_max_score: float = 0.9


@dataclass
class TrainOutcome:
    out: Path
    card: Path
    result: TrainResult
    problems: list[LabelProblem]
    kept_start: bool
    check: Confirmation | None = None  # a fine-tune's gain on fresh draws, when it had one


def gather(inputs: TrainInputs, cfg: Config, tcfg: TrainConfig, cache: AudioCache,
           ) -> tuple[list[Recording], list[LabelProblem], list[SiteCount]]:
    """Every recording: labelled folders, reviewed clips, screened site audio."""
    frontend = Frontend(cfg.frontend)
    recordings: list[Recording] = []
    problems: list[LabelProblem] = []
    for folder in inputs.data:
        labels = read_labels(folder)
        recs, probs = load_recordings(labels, frontend, cache=cache)
        recordings += recs
        problems += labels.problems + probs
    recordings += inputs.reviews
    problems += inputs.review_problems
    sites: list[SiteCount] = []
    if inputs.backgrounds:
        weights = inputs.screen_weights or tcfg.init
        if weights is None:
            raise ListenerError("--background needs a model to screen out calls: give --init "
                                "or --screen-weights")
        model, _ = load_network(weights, tcfg.architecture)  # an ensemble screens too
        for folder in inputs.backgrounds:
            recs, count = load_site_audio(folder, cache, model, cfg.frontend, tcfg.window_s,
                                          inputs.background_max_score)
            recordings += recs
            problems += count.problems
            sites.append(count)
    return recordings, problems, sites


def run_training(inputs: TrainInputs, cfg: Config, tcfg: TrainConfig, out: Path,
                 cache: AudioCache, checkpoint: Path, half: bool, keep_checkpoint: bool = False,
                 progress: Progress | None = None, started: float | None = None,
                 model_id: str | None = None) -> TrainOutcome:
    """Train and write ``out`` and its card; the checkpoint goes unless ``keep_checkpoint``.

    ``model_id`` is declared in the file's metadata and its card, so the
    daemon, the console and ``/metrics`` call the model by it.
    """
    started = time.monotonic() if started is None else started
    _refuse_early(tcfg, model_id, checkpoint)
    recordings, problems, sites = gather(inputs, cfg, tcfg, cache)
    train_set, val_set, lineage, notes = split_for(recordings, tcfg)
    if tcfg.time_budget_s is not None:  # the budget covers decoding and screening too
        spent = time.monotonic() - started
        tcfg = _with_budget(tcfg, max(0.0, tcfg.time_budget_s - spent))
    log.info("training %s on %d recordings, validating on %d held-out ones", tcfg.architecture,
             len(train_set), len(val_set))
    result = train(tcfg, train_set, val_set, cfg.frontend, checkpoint=checkpoint,
                   progress=progress)
    check = None
    if needs_check(tcfg, result, val_set):
        start = initial_model(tcfg)  # loaded once: scored by the check, kept if it fails
        check = confirm(tcfg, val_set, cfg.frontend, result, start, torch.device(result.device))
        result = settle(result, check, start)
    init_digest = file_digest(Path(tcfg.init)) if tcfg.init is not None else None
    teacher_digest = file_digest(Path(tcfg.teacher)) if tcfg.teacher is not None else None
    meta = {"format": "listener", "architecture": tcfg.architecture,
            "trained_by": "listener train", "recipe": json.dumps(tcfg.to_json()),
            "best_epoch": str(result.best_epoch),
            "val_balanced_roc_auc": f"{result.best_score:.4f}",
            "frontend": json.dumps(cfg.frontend.model_dump(mode="json")),
            **lineage.joined(sorted({r.path for r in train_set})).to_metadata()}
    optional = {"model_id": model_id, "init_sha256": init_digest,
                "teacher_sha256": teacher_digest,
                "fine_tune_check": None if check is None else json.dumps(check.to_json())}
    meta.update({k: v for k, v in optional.items() if v is not None})
    save_weights(result.state_dict, out, half, meta)
    files = {"train": len(train_set), "val": len(val_set),
             "calls": sum(r.positive for r in recordings),
             "backgrounds": sum(not r.positive for r in recordings), "skipped": len(problems),
             "sites": [s.to_json() for s in sites], "reviews": inputs.review_counts,
             "data": [str(d) for d in inputs.data], "lineage": notes,
             "check": None if check is None else check.text(), "init_sha256": init_digest,
             "frontend": cfg.frontend,
             "teacher_sha256": teacher_digest}
    text = model_card(out, tcfg, result, ", ".join(map(str, inputs.data)) or "(none)", files,
                      half, model_id)
    card = write_card(out, text)
    if not keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
    kept_start = tcfg.init is not None and result.best_epoch == 0
    return TrainOutcome(out, card, result, problems, kept_start, check)


def _refuse_early(tcfg: TrainConfig, model_id: str | None, checkpoint: Path) -> None:
    """What the model id, the weights' headers and a checkpoint of another command
    refuse, before any audio is decoded."""
    resume.check(checkpoint, tcfg.to_json())
    if model_id is not None:
        require_model_id(model_id)
    if tcfg.init is not None:
        header = inspect_checkpoint(tcfg.init)
        require_start_input(tcfg, header.band_norm, header.members)
    if tcfg.teacher is not None:
        inspect_checkpoint(tcfg.teacher)


def split_for(recordings: list[Recording], tcfg: TrainConfig,
              ) -> tuple[list[Recording], list[Recording], Lineage, list[str]]:
    """The split, keeping the files the starting model learnt from out of validation.

    Returns the training and validation recordings, the starting model's
    lineage, and lines for the card on what that did. When a class would be
    left with no file to hold out, the plain split is used and the card says
    that validation favours the starting weights.
    """
    sources = [w for w in (tcfg.init, tcfg.teacher) if w]
    start = lineage_of(sources)
    who = " or the ".join(n for n, w in (("starting model", tcfg.init),
                                         ("teacher", tcfg.teacher)) if w) or "starting model"
    pinned = frozenset(r.group for r in recordings if start.digests and digest(r.path)
                       in start.digests)
    notes = [n for n in [_same_draw(tcfg)] if n]
    if not start.complete:
        notes.append(f"the {who} does not record every file it trained on: validation may "
                     f"hold some, and then favours the starting weights")
        log.warning("%s: %s", ", ".join(sources), notes[-1])
    train_set, val_set = split_by_file(recordings, tcfg.val_fraction, tcfg.seed)
    if not pinned:
        return train_set, val_set, start, notes
    try:
        kept = split_by_file(recordings, tcfg.val_fraction, tcfg.seed, pinned)
        lacking = {r.positive for r in val_set} - {r.positive for r in kept[1]}
    except NothingHeldOut as err:  # no file of that class left to hold out
        kept, lacking = None, {err.positive}
    if kept is not None and not lacking:
        train_set, val_set = kept
        notes.append(f"{len(pinned)} files the {who} trained on were kept out of validation")
    else:
        what = " or ".join("call" if c else "background" for c in sorted(lacking, reverse=True))
        notes.append(f"validation holds files the {who} trained on (no {what} file it did "
                     f"not train on could be held out): the starting weights score "
                     f"optimistically")
        log.warning("%s", notes[-1])
    return train_set, val_set, start, notes


def _same_draw(tcfg: TrainConfig) -> str | None:
    """A warning when the start's own recipe drew the windows this run validates on."""
    if tcfg.init is None:
        return None
    try:
        start = TrainConfig.from_json(json.loads(safetensors_metadata(tcfg.init)["recipe"]))
    except (KeyError, TypeError, ValueError, ListenerError):  # none, or not this version's
        return None
    keys = ("seed", "draw_seed", "val_fraction", "val_per_call_file", "val_per_background_file")
    if any(getattr(start, k) != getattr(tcfg, k) for k in keys):
        return None
    note = (f"the starting weights were chosen on validation windows drawn as this run "
            f"draws them (split seed {tcfg.seed}, window seed {tcfg.draw_seed}): they "
            f"score optimistically at epoch 0; --val-seed draws other windows")
    log.warning("%s: %s", tcfg.init, note)
    return note


def _with_budget(tcfg: TrainConfig, seconds: float) -> TrainConfig:
    return replace(tcfg, time_budget_s=seconds)


def parse_duration(text: str) -> float:
    """``45m``, ``1h``, ``90s`` or plain seconds -> seconds."""
    text = text.strip().lower()
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise ListenerError(f"--time-budget {text!r}: give e.g. 45m, 1h or 900s") from None
    if not math.isfinite(value) or value <= 0:
        raise ListenerError(f"--time-budget {text!r}: must be a positive, finite length")
    return value


def summary(outcome: TrainOutcome) -> dict[str, Any]:
    r = outcome.result
    return {"out": str(outcome.out), "best_epoch": r.best_epoch, "stop": r.stop,
            "val_balanced_roc_auc": r.best_score, "minutes": r.seconds / 60,
            "kept_start": outcome.kept_start}
