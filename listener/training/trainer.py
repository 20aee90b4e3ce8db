"""The training loop: balanced batches, augmentation, the daemon's frontend, safe selection.

Every batch is half calls, half negatives (class-balanced whatever the file
counts, source-balanced within a class), built on the fly by
:mod:`listener.training.augment`, turned into model input by the same
:class:`~listener.model.frontend.Frontend` the daemon runs, masked, and fed
to the network. Before the first step the starting weights are scored on the
validation windows (epoch 0), and after each epoch the current ones are; the
weights kept are the best of those, so a run never returns weights worse on
validation than the ones it started from (``--init`` cannot wreck a model).
From scratch, epoch 0 is the untrained network: scored as the chance level,
never kept (random weights are no safe fallback; a run none of whose epochs
beats them says so: :attr:`TrainResult.learnt_nothing`).
Training stops at ``epochs``, after ``patience`` epochs without a gain (not
counting the learning rate's warm-up: :mod:`listener.training.schedule`), or
before an epoch that would overrun ``time_budget_s`` (less, for a fine-tune,
what the check of its gain will cost: ``listener.training.confirm``).

With ``ema_decay`` the weights scored and kept are a moving average (BatchNorm
statistics included): one epoch's weights swing with its last batches, so
picking among them by a few hundred validation windows picks noise.

Reproducible: the generators of examples, masks and dropout are seeded from
``seed`` (the validation windows from ``draw_seed``) and saved in the
checkpoint: identical runs, and a run stopped and resumed, give identical weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from listener.config import FrontendConfig
from listener.errors import ListenerError
from listener.model.checkpoints import load_model
from listener.model.frontend import Frontend
from listener.model.network import OrcaResNet, build_model
from listener.model.precision import cpu_has_native_bf16
from listener.training import augment
from listener.training.augment import AugmentConfig
from listener.training.data import Recording, SourcePool
from listener.training.distill import Teacher, distillation_loss
from listener.training.resume import DATA_KEY, State, data_binding, resume, save
from listener.training.schedule import out_of_patience, warmup_cosine, warmup_epochs
from listener.training.validation import (
    POOLED_DRAWS,
    ValidationSet,
    figures,
    make_validation,
    score,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (steps done, total steps, status text)

SCRATCH_LR = 2e-3
# 1/10 of the from-scratch rate, the usual fine-tuning ratio; 2e-3 on a trained
# model wrecked it (validation PR-AUC 0.98 -> 0.78) while 2e-4 improved it.
INIT_LR = 2e-4
#: Each draw costs as much as one epoch's validation, twice (the kept and the start).
MAX_CONFIRM_DRAWS = 50


@dataclass(frozen=True)
class TrainConfig:
    """The recipe; every field goes into the model card."""

    architecture: str = "resnet18"
    epochs: int = 10
    steps_per_epoch: int = 12
    batch_size: int = 16
    lr: float = SCRATCH_LR
    weight_decay: float = 1e-2
    seed: int = 0
    val_seed: int | None = None  # the per-epoch validation draw's seed; None: ``seed``
    val_fraction: float = 0.2
    val_per_call_file: int = 2
    val_per_background_file: int = 6
    patience: int = 4
    window_s: float = 2.0
    time_budget_s: float | None = None
    init: str | None = None  # fine-tune from these weights
    train_from: str | None = None  # e.g. "layer3": earlier layers frozen (weights and BN)
    ema_decay: float = 0.0  # score and keep a moving average of the weights; 0: off
    confirm_draws: int = POOLED_DRAWS  # a fine-tune's gain, checked on fresh draws; 0: off
    band_norm: bool = False  # from scratch: subtract each band's median first (--init decides)
    teacher: str | None = None  # learn towards these weights' probabilities too (distill.py)
    teacher_weight: float = 0.5  # the teacher's share of each window's target
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ListenerError(f"ema_decay {self.ema_decay:g}: must be at least 0 and below 1")
        if not 0.0 < self.teacher_weight <= 1.0:
            raise ListenerError(f"--teacher-weight {self.teacher_weight:g}: must be above 0 "
                                "and at most 1")
        if not 0.0 < self.val_fraction < 1.0:  # nan fails too
            raise ListenerError(f"--val-fraction {self.val_fraction:g}: must be above 0 and "
                                "below 1 (every source with several files holds out at "
                                "least one, and training keeps the rest)")
        if not 0 <= self.confirm_draws <= MAX_CONFIRM_DRAWS:
            raise ListenerError(f"--confirm-draws {self.confirm_draws}: must be 0 (off) to "
                                f"{MAX_CONFIRM_DRAWS}")

    @property
    def draw_seed(self) -> int:
        """Seed of the per-epoch validation windows (the split stays ``seed``'s)."""
        return self.seed if self.val_seed is None else self.val_seed

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "augment"}
        out["augment"] = self.augment.to_json()
        return out

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_json`: the recipe in weights' metadata (``TypeError``
        for keys this version does not know)."""
        doc = dict(doc)
        augment: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                   for k, v in doc.pop("augment", {}).items()}
        return cls(**doc, augment=AugmentConfig(**augment))


@dataclass
class TrainResult:
    """What a run produced: the best weights and the figures for the card."""

    state_dict: dict[str, Tensor]
    best_epoch: int
    best_score: float
    history: list[dict[str, Any]]
    seconds: float
    device: str
    autocast: str | None
    val_files: int
    train_files: int
    stop: str = "epochs"
    shares: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def best_pr_auc(self) -> float:
        return float(self.history[self.best_epoch_index]["val_pr_auc"])

    @property
    def best_epoch_index(self) -> int:
        return next(i for i, h in enumerate(self.history) if h["epoch"] == self.best_epoch)

    @property
    def best_figures(self) -> dict[str, Any]:
        return self.history[self.best_epoch_index]

    @property
    def learnt_nothing(self) -> bool:
        """From scratch, no trained epoch scored above the untrained network (epoch 0)."""
        return (self.best_epoch > 0 and self.history[0]["epoch"] == 0
                and self.history[0]["val_score"] >= self.best_score)


def autocast_for(device: torch.device, flags: frozenset[str] | None = None) -> torch.dtype | None:
    """bf16 autocast on CUDA and on CPUs with native bf16 (emulated bf16 is slower), else
    ``None`` (float32); ``flags``: CPU feature flags for tests, else ``/proc/cpuinfo``."""
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_native_bf16(flags) else None


def make_batch(calls: list[Recording] | SourcePool, backgrounds: list[Recording] | SourcePool,
               size: int, n: int, rng: np.random.Generator,
               cfg: AugmentConfig, *, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """``size`` waves, half calls (rounded down) and half negatives, shuffled (``rate``:
    the audio's sample rate, the frontend's)."""
    call_pool = calls if isinstance(calls, SourcePool) else SourcePool(calls, cfg.source_power)
    beds = (backgrounds if isinstance(backgrounds, SourcePool)
            else SourcePool(backgrounds, cfg.source_power))
    n_pos = size // 2
    waves = [augment.positive_example(call_pool.draw(rng), beds, n, rng, cfg, rate=rate)
             if i < n_pos else augment.negative_example(beds, n, rng, cfg, rate=rate)
             for i in range(size)]
    labels = np.asarray([1] * n_pos + [0] * (size - n_pos), dtype=np.int64)
    order = rng.permutation(size)
    return np.stack(waves)[order], labels[order]


STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4", "head")


def freeze_before(model: OrcaResNet, train_from: str | None) -> list[torch.nn.Module]:
    """Freeze every stage before ``train_from`` (``bn1`` goes with ``conv1``); the frozen modules.

    Fine-tuning only the last stages costs a fraction of a full step (no
    gradients flow into the early, high-resolution layers) and cannot
    disturb the general features those layers learnt.
    """
    if train_from is None:
        return []
    if train_from not in STAGES:
        raise ValueError(f"train_from must be one of {', '.join(STAGES)}; got {train_from!r}")
    frozen_names = STAGES[:STAGES.index(train_from)]
    frozen = [m for name, m in model.named_children()
              if name in frozen_names or (name == "bn1" and "conv1" in frozen_names)]
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen


def initial_model(cfg: TrainConfig) -> OrcaResNet:
    """``cfg.init``'s network (band-normalised or not, as it was trained), else a new one."""
    if cfg.init:
        model, _ = load_model(cfg.init, cfg.architecture)
        require_start_input(cfg, model.band_norm)
        return model
    return build_model(cfg.architecture, cfg.band_norm)


def require_start_input(cfg: TrainConfig, start_band_norm: bool, members: int = 1) -> None:
    """Refuse an ``--init`` that is an averaged ensemble (a fine-tune trains one network),
    and ``--band-norm`` on a plain ``--init`` (a fine-tune keeps its start's input)."""
    if cfg.init and members > 1:
        raise ListenerError(f"--init {cfg.init}: an averaged ensemble of {members} networks; "
                            f"fine-tune one of its members, then join the result with the "
                            f"others (`listener ensemble`)")
    if cfg.band_norm and cfg.init and not start_band_norm:
        raise ListenerError(f"--band-norm: {cfg.init} was trained without it, and a "
                            f"fine-tune keeps its start's input; train from scratch")


class _Run:
    """One training run's fixed parts: data pools, validation windows, model, optimiser."""

    def __init__(self, cfg: TrainConfig, train_set: list[Recording], val_set: list[Recording],
                 frontend_cfg: FrontendConfig | None, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.frontend = Frontend(frontend_cfg or FrontendConfig()).to(device)
        self.n = round(cfg.window_s * self.frontend.cfg.sample_rate)
        self.calls = SourcePool([r for r in train_set if r.positive], cfg.augment.source_power)
        self.beds = SourcePool([r for r in train_set if not r.positive],
                               cfg.augment.source_power)
        self.val: ValidationSet = make_validation(
            val_set, self.n, cfg.draw_seed, cfg.val_per_call_file, cfg.val_per_background_file,
            cfg.augment, rate=self.frontend.cfg.sample_rate)
        torch.manual_seed(cfg.seed)  # from-scratch init and dropout: always seeded
        self.model = initial_model(cfg).to(device)
        self.frozen = freeze_before(self.model, cfg.train_from)
        self.ema = (AveragedModel(self.model, use_buffers=True,
                                  multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
                    if cfg.ema_decay > 0 else None)
        self.opt = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                     lr=cfg.lr, weight_decay=cfg.weight_decay)
        total = cfg.epochs * cfg.steps_per_epoch
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda step: warmup_cosine(step, total))
        self.dtype = autocast_for(device)
        self.teacher = Teacher(cfg.teacher, device, self.dtype) if cfg.teacher else None

    @property
    def kept(self) -> torch.nn.Module:
        """The weights that are scored, kept and written: the average when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def parts(self) -> dict[str, Any]:
        """What a checkpoint saves besides the run's state (``resume.save``)."""
        return {"model": self.model, "opt": self.opt, "sched": self.sched, "ema": self.ema}

    def evaluate(self, epoch: int, loss: float | None) -> dict[str, Any]:
        model = self.kept
        assert isinstance(model, OrcaResNet)
        t0 = time.monotonic()
        fig = figures(self.val, score(model, self.frontend, self.val.waves, self.device))
        return {"epoch": epoch, "loss": loss, "val_score": fig["balanced_roc_auc"],
                "val_roc_auc": fig["roc_auc"], "val_pr_auc": fig["pr_auc"],
                "sources": fig["sources"], "val_s": round(time.monotonic() - t0, 3)}

    def step(self, waves: np.ndarray, labels: np.ndarray, gen: torch.Generator) -> float:
        self.model.train()
        for m in self.frozen:  # frozen layers keep their BatchNorm statistics too
            m.eval()
        with torch.no_grad():
            x = self.frontend(torch.from_numpy(waves).to(self.device))
            x = augment.spec_masks(x.cpu(), self.cfg.augment, gen).to(self.device)
        y = torch.from_numpy(labels).to(self.device)
        with torch.autocast(device_type=self.device.type, dtype=self.dtype or torch.float32,
                            enabled=self.dtype is not None):
            logits = self.model(x)
        if self.teacher is None:
            loss = torch.nn.functional.cross_entropy(logits.float(), y)
        else:
            loss = distillation_loss(logits, y, self.teacher.probabilities(x),
                                     self.cfg.teacher_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return float(loss.detach())


def train(cfg: TrainConfig, train_set: list[Recording], val_set: list[Recording],
          frontend_cfg: FrontendConfig | None = None, checkpoint: Path | None = None,
          device: torch.device | None = None, progress: Progress | None = None) -> TrainResult:
    """Train; with ``checkpoint`` set, resume from it if present and save it every epoch."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run = _Run(cfg, train_set, val_set, frontend_cfg, device)
    recipe = cfg.to_json()
    if checkpoint is not None:  # the data is hashed only for a checkpoint
        recipe[DATA_KEY] = data_binding(train_set, val_set, run.frontend.cfg)
    if checkpoint is not None and checkpoint.exists():
        state = resume(checkpoint, run.parts(), recipe)
        log.info("resumed from %s after epoch %d", checkpoint, state.history[-1]["epoch"])
    else:
        state = State.fresh(_copy(run.kept), cfg.seed)
        _consider(state, run.evaluate(0, None), run)
    started = time.monotonic() - state.seconds
    stop, total = "epochs", cfg.epochs * cfg.steps_per_epoch
    for epoch in range(state.history[-1]["epoch"], cfg.epochs):
        done = [h for h in state.history if h["epoch"] > 0]
        per_epoch = (state.seconds / len(done)) if done else 0.0
        budget = training_budget(cfg, state.history)
        if budget is not None and state.seconds + per_epoch > budget:
            stop = "time budget"
            break
        losses = []
        for step in range(cfg.steps_per_epoch):
            waves, labels = make_batch(run.calls, run.beds, cfg.batch_size, run.n, state.rng,
                                       cfg.augment, rate=run.frontend.cfg.sample_rate)
            losses.append(run.step(waves, labels, state.gen))
            if progress:
                progress(epoch * cfg.steps_per_epoch + step + 1, total,
                         f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.3f}")
        _consider(state, run.evaluate(epoch + 1, float(np.mean(losses))), run)
        state.seconds = time.monotonic() - started
        if checkpoint is not None:
            save(checkpoint, run.parts(), state, recipe)
        if out_of_patience(epoch + 1, state.best_epoch, cfg.patience,
                           warmup_epochs(cfg.epochs, cfg.steps_per_epoch)):
            stop = "patience"
            log.info("early stop: no validation gain for %d epochs", cfg.patience)
            break
    return TrainResult(state.best, state.best_epoch, state.best_score, state.history,
                       time.monotonic() - started, str(device),
                       str(run.dtype).removeprefix("torch.") if run.dtype else None,
                       len(val_set), len(train_set), stop,
                       {"calls": run.calls.shares(), "beds": run.beds.shares()})


def training_budget(cfg: TrainConfig, history: list[dict[str, Any]]) -> float | None:
    """The seconds of ``time_budget_s`` that epochs may use: a fine-tune keeps back what
    the check of its gain costs afterwards (each draw scored twice, timed on epoch 0)."""
    if cfg.time_budget_s is None:
        return None
    check_s = 2 * cfg.confirm_draws * float(history[0].get("val_s", 0.0)) if cfg.init else 0.0
    return cfg.time_budget_s - check_s


def _consider(state: State, row: dict[str, Any], run: _Run) -> None:
    """Record an epoch; keep its weights only if strictly better than the best so far.
    From scratch, epoch 0 (random weights) is recorded, never kept."""
    state.history.append(row)
    value = row["val_score"]
    log.info("epoch %d: loss %s, validation balanced ROC-AUC %.3f PR-AUC %.3f", row["epoch"],
             "-" if row["loss"] is None else f"{row['loss']:.4f}", value, row["val_pr_auc"])
    if row["epoch"] == 0 and run.cfg.init is None:
        return
    no_validation = math.isnan(value)
    if (no_validation and row["epoch"] > 0) or value > state.best_score:
        state.best_score = -math.inf if no_validation else value
        state.best_epoch = row["epoch"]
        state.best = _copy(run.kept)


def _copy(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
