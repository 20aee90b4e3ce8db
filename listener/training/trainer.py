"""The training loop: balanced batches, augmentation, the daemon's frontend, early stopping.

Every batch is half calls, half background (class-balanced whatever the
file counts), built on the fly by :mod:`listener.training.augment` from the
training files, turned into model input by the same
:class:`~listener.model.frontend.Frontend` the daemon runs, masked, and fed
to the network. After each epoch the validation windows (built once, from
held-out *files*) are scored and the weights with the best PR-AUC are kept;
training stops after ``patience`` epochs without a gain.

Reproducible: epoch ``e`` draws from generators seeded with ``(seed, e)``, so
a run resumed from its checkpoint continues exactly as an uninterrupted one.
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

from listener.config import FrontendConfig
from listener.model.checkpoints import load_model
from listener.model.frontend import Frontend
from listener.model.network import OrcaResNet, build_model
from listener.quality.metrics import average_precision, roc_auc
from listener.training import augment
from listener.training.augment import AugmentConfig
from listener.training.data import Recording

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (steps done, total steps, status text)


@dataclass(frozen=True)
class TrainConfig:
    """The recipe; every field goes into the model card."""

    architecture: str = "resnet18"
    epochs: int = 10
    steps_per_epoch: int = 12
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-2
    seed: int = 0
    val_fraction: float = 0.2
    val_per_call_file: int = 2
    val_per_background_file: int = 6
    patience: int = 4
    window_s: float = 2.0
    init: str | None = None  # fine-tune from these weights
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "augment"}
        out["augment"] = self.augment.to_json()
        return out


@dataclass
class TrainResult:
    """What a run produced: the best weights and the figures for the card."""

    state_dict: dict[str, Tensor]
    best_epoch: int
    best_pr_auc: float
    history: list[dict[str, float]]
    seconds: float
    device: str
    autocast: str | None
    val_files: int
    train_files: int


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AMX or AVX-512 BF16); emulated bf16 is slower."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
    flags = set(cpuinfo.split())
    return bool({"amx_bf16", "avx512_bf16"} & flags)


def autocast_for(device: torch.device, cpuinfo: str | None = None) -> torch.dtype | None:
    """bf16 autocast on CUDA and on CPUs with native bf16, else ``None`` (float32)."""
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_bf16(cpuinfo) else None


def make_batch(calls: list[Recording], backgrounds: list[Recording], size: int, n: int,
               rng: np.random.Generator, cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """``size`` waves, half calls (rounded down) and half background, shuffled."""
    n_pos = size // 2
    waves, labels = [], []
    for i in range(size):
        if i < n_pos:
            call = calls[int(rng.integers(0, len(calls)))]
            waves.append(augment.positive_example(call, backgrounds, n, rng, cfg))
        else:
            waves.append(augment.negative_example(backgrounds, n, rng, cfg))
        labels.append(1 if i < n_pos else 0)
    order = rng.permutation(size)
    return np.stack(waves)[order], np.asarray(labels, dtype=np.int64)[order]


def make_validation(val: list[Recording], n: int, cfg: TrainConfig) -> tuple[np.ndarray,
                                                                           np.ndarray]:
    """Fixed validation windows from held-out files only (their own backgrounds)."""
    rng = np.random.default_rng([cfg.seed, 10**6])
    calls = [r for r in val if r.positive]
    backgrounds = [r for r in val if not r.positive]
    waves, labels = [], []
    for rec in calls:
        for _ in range(cfg.val_per_call_file):
            waves.append(augment.positive_example(rec, backgrounds, n, rng, cfg.augment))
            labels.append(1)
    for rec in backgrounds:
        for _ in range(cfg.val_per_background_file):
            waves.append(augment.negative_example([rec], n, rng, cfg.augment))
            labels.append(0)
    return np.stack(waves), np.asarray(labels, dtype=np.int64)


def score(model: OrcaResNet, frontend: Frontend, waves: np.ndarray, device: torch.device,
          batch: int = 16) -> np.ndarray:
    """Probabilities of a call, eval mode, float32 (as the daemon scores)."""
    model.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(waves), batch):
            x = frontend(torch.from_numpy(waves[i:i + batch]).to(device))
            out.append(torch.softmax(model(x).float(), dim=1)[:, 1].cpu())
    return torch.cat(out).numpy().astype(np.float64)


def warmup_cosine(step: int, total: int, warmup_fraction: float = 0.15) -> float:
    """The learning-rate factor: linear warm-up, then cosine decay to zero at ``total``."""
    warm = max(1, round(warmup_fraction * total))
    return min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def initial_model(cfg: TrainConfig) -> OrcaResNet:
    if cfg.init:
        model, _ = load_model(cfg.init, cfg.architecture)
        return model
    torch.manual_seed(cfg.seed)
    return build_model(cfg.architecture)


def train(cfg: TrainConfig, train_set: list[Recording], val_set: list[Recording],
          frontend_cfg: FrontendConfig | None = None, checkpoint: Path | None = None,
          device: torch.device | None = None, progress: Progress | None = None) -> TrainResult:
    """Train; with ``checkpoint`` set, resume from it if present and save it every epoch."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    frontend = Frontend(frontend_cfg or FrontendConfig()).to(device)
    n = round(cfg.window_s * frontend.cfg.sample_rate)
    calls = [r for r in train_set if r.positive]
    backgrounds = [r for r in train_set if not r.positive]
    val_waves, val_labels = make_validation(val_set, n, cfg)
    model = initial_model(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: warmup_cosine(step, total))
    state = _State(model.state_dict(), -1, -1.0, [], 0.0)
    if checkpoint is not None and checkpoint.exists():
        state = _resume(checkpoint, model, opt, sched)
        log.info("resumed from %s after epoch %d", checkpoint, len(state.history))
    dtype = autocast_for(device)
    started = time.monotonic() - state.seconds
    for epoch in range(len(state.history), cfg.epochs):
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        losses = []
        model.train()
        for step in range(cfg.steps_per_epoch):
            waves, labels = make_batch(calls, backgrounds, cfg.batch_size, n, rng, cfg.augment)
            loss = _step(model, frontend, waves, labels, opt, device, dtype, cfg, gen)
            sched.step()
            losses.append(loss)
            if progress:
                progress(epoch * cfg.steps_per_epoch + step + 1, total,
                         f"epoch {epoch + 1}/{cfg.epochs} loss {np.mean(losses):.3f}")
        scores = score(model, frontend, val_waves, device)
        ap, auc = average_precision(val_labels, scores), roc_auc(val_labels, scores)
        state.history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                              "val_pr_auc": ap, "val_roc_auc": auc})
        log.info("epoch %d: loss %.4f, validation PR-AUC %.3f ROC-AUC %.3f",
                 epoch + 1, np.mean(losses), ap, auc)
        if ap > state.best_pr_auc:
            state.best_pr_auc, state.best_epoch = ap, epoch + 1
            state.best = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        state.seconds = time.monotonic() - started
        if checkpoint is not None:
            _save(checkpoint, model, opt, sched, state)
        if epoch + 1 - state.best_epoch >= cfg.patience:
            log.info("early stop: no PR-AUC gain for %d epochs", cfg.patience)
            break
    return TrainResult(state.best, state.best_epoch, state.best_pr_auc, state.history,
                       time.monotonic() - started, str(device),
                       str(dtype).removeprefix("torch.") if dtype else None,
                       len(val_set), len(train_set))


def _step(model: OrcaResNet, frontend: Frontend, waves: np.ndarray, labels: np.ndarray,
          opt: torch.optim.Optimizer, device: torch.device, dtype: torch.dtype | None,
          cfg: TrainConfig, gen: torch.Generator) -> float:
    with torch.no_grad():
        x = frontend(torch.from_numpy(waves).to(device))
        x = augment.spec_masks(x.cpu(), cfg.augment, gen).to(device)
    y = torch.from_numpy(labels).to(device)
    with torch.autocast(device_type=device.type, dtype=dtype or torch.float32,
                        enabled=dtype is not None):
        logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    opt.step()
    return float(loss.detach())


@dataclass
class _State:
    best: dict[str, Tensor]
    best_epoch: int
    best_pr_auc: float
    history: list[dict[str, float]]
    seconds: float


def _save(path: Path, model: OrcaResNet, opt: torch.optim.Optimizer,
          sched: torch.optim.lr_scheduler.LRScheduler, state: _State) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "best": state.best,
                "best_epoch": state.best_epoch, "best_pr_auc": state.best_pr_auc,
                "history": state.history, "seconds": state.seconds}, tmp)
    tmp.replace(path)


def _resume(path: Path, model: OrcaResNet, opt: torch.optim.Optimizer,
            sched: torch.optim.lr_scheduler.LRScheduler) -> _State:
    doc = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(doc["model"])
    opt.load_state_dict(doc["opt"])
    sched.load_state_dict(doc["sched"])
    return _State(doc["best"], int(doc["best_epoch"]), float(doc["best_pr_auc"]),
                  list(doc["history"]), float(doc["seconds"]))
