"""Window audio -> call probability: the frontend and the network on one device.

:class:`Scorer` loads the weights (one network or an averaged ensemble,
:mod:`listener.model.ensemble`), picks the device and the number format
(:mod:`listener.model.precision`), applies the speed options of
:class:`~listener.config.ModelConfig` and scores batches.
Speed options and why they are safe:

* ``fuse_batchnorm``: BatchNorm2d folded into the conv before it (exact up
  to float rounding, ~1e-6 on the scores);
* ``channels_last``: NHWC memory layout, faster convolutions on most CPUs
  and GPUs, same maths;
* ``cpu_threads``: ``torch.set_num_threads`` (process-wide; 0 leaves torch's default);
* ``precision``: the body's weights converted once to bfloat16 / float16
  (no per-call autocast); the stem, the head, the softmax, the frontend and
  the plan's ``float32_stages`` (none unless configured) stay float32.
  ``docs/model.md`` has the measured score error of each.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

from listener.config import FrontendConfig, ModelConfig
from listener.errors import ModelLoadError
from listener.model.ensemble import load_network
from listener.model.frontend import Frontend
from listener.model.network import (
    AveragedEnsemble,
    OrcaResNet,
    build_model,
    describe,
    fuse_batchnorm,
    networks_of,
    parameter_count,
    residual_blocks,
)
from listener.model.precision import ExecutionPlan, log_startup_hint, plan_execution

log = logging.getLogger(__name__)

# Without weights there is nothing to infer an architecture from; the demo
# uses the production one so its speed is representative.
RANDOM_DEFAULT_ARCHITECTURE = "resnet50"


def select_device(requested: str, cuda_available: bool | None = None) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without CUDA is an error.

    Args:
        requested: ``"auto"``, ``"cpu"`` or ``"cuda"`` (``model.device``).
        cuda_available: override detection (for tests); ``None`` asks torch.
    """
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if requested == "auto":
        return torch.device("cuda" if available else "cpu")
    if requested == "cuda" and not available:
        raise ModelLoadError("model.device is 'cuda' but torch sees no CUDA device "
                             "(use 'auto' or 'cpu')")
    if requested not in ("cpu", "cuda"):
        raise ModelLoadError(f"model.device must be auto, cpu or cuda, got {requested!r}")
    return torch.device(requested)


@dataclass(frozen=True)
class ModelInfo(Mapping[str, Any]):
    """What scores an event: the ``model`` block of events and ``listener_build_info``.

    Also a read-only mapping of its fields plus ``dtype`` (the old name of
    ``precision``), so ``{**info}`` and ``info.get("sha256")`` keep working.
    """

    id: str
    architecture: str
    weights: str | None
    sha256: str | None
    layout: str | None
    random: bool
    device: str
    precision: str  # the network's number format as run: float32, bfloat16, float16
    parameter_count: int
    fuse_batchnorm: bool
    channels_last: bool
    float32_stages: tuple[str, ...] = ()  # residual stages kept float32 in a reduced precision
    members: int = 1  # networks averaged (listener ensemble); each costs a network's compute

    def _keys(self) -> tuple[str, ...]:
        return (*(f.name for f in fields(self)), "dtype")

    def __getitem__(self, key: str) -> Any:
        if key == "dtype":
            return self.precision
        if key in self._keys():
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-ready)."""
        return dict(self.items())


class Scorer:
    """Scores 2 s windows with the configured network.

    Args:
        cfg: ``model`` section: weights, architecture, device, speed options.
        frontend_cfg: ``frontend`` section (defaults reproduce the trained model).
        allow_random_weights: with ``cfg.weights`` unset, build a seeded random
            network instead of failing (demo and tests only; ``info["random"]``).
        seed: the seed of that random network.
        plan: how to run the network, decided by the caller (benchmarks
            comparing choices); ``None`` = :func:`plan_execution` of the config.

    Raises:
        ModelLoadError: weights missing, unreadable or not fitting,
            ``device: cuda`` without CUDA, or a ``precision`` this device
            does not run well (checked first, before the weights load).
    """

    def __init__(self, cfg: ModelConfig, frontend_cfg: FrontendConfig | None = None, *,
                 allow_random_weights: bool = False, seed: int = 0,
                 plan: ExecutionPlan | None = None) -> None:
        self.cfg = cfg
        if cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        self.device = select_device(cfg.device)
        # Decided before loading: a refused precision should not cost a load.
        self.plan: ExecutionPlan = plan or plan_execution(
            cfg.precision, self.device, fuse_batchnorm=cfg.fuse_batchnorm,
            channels_last=cfg.channels_last, float32_stages=cfg.float32_stages)
        model, source = self._load(cfg, allow_random_weights, seed)
        n_params = parameter_count(model)  # of the network as trained, before any fusion
        self.model: OrcaResNet | AveragedEnsemble = _prepare_network(model, self.plan,
                                                                     self.device)
        self._paths = [(net, _block_dtypes(net, self.plan)) for net in networks_of(self.model)]
        self.frontend = Frontend(frontend_cfg or FrontendConfig()).to(self.device).eval()
        self.info = ModelInfo(
            id=cfg.model_id, architecture=model.architecture, **source,
            device=str(self.device), precision=self.plan.precision,
            parameter_count=n_params, fuse_batchnorm=self.plan.fuse_batchnorm,
            channels_last=self.plan.channels_last, float32_stages=self.plan.float32_stages,
            members=len(self._paths))
        log.info("scorer ready: %s on %s (%s)", describe(model), self.device,
                 self.plan.precision)
        if plan is None:  # a station's own scorer: say once if bf16 would be faster here
            log_startup_hint(cfg.precision, self.device)

    @classmethod
    def _load(cls, cfg: ModelConfig, allow_random_weights: bool,
              seed: int) -> tuple[OrcaResNet | AveragedEnsemble, dict[str, Any]]:
        """The network (or averaged ensemble) in eval mode and where its weights came from."""
        model: OrcaResNet | AveragedEnsemble
        if cfg.weights is not None:
            model, ckpt = load_network(cfg.weights, cfg.architecture)
            source = {"weights": str(ckpt.path), "sha256": ckpt.sha256,
                      "layout": ckpt.layout, "random": False}
        elif allow_random_weights:
            model = cls._random_model(cfg.architecture, seed)
            source = {"weights": None, "sha256": None, "layout": None, "random": True}
            log.warning("no model.weights: using a RANDOM %s (seed %d); scores are meaningless",
                        model.architecture, seed)
        else:
            raise ModelLoadError("model.weights is required: the path of a .safetensors or "
                                 ".pt file (convert a fastai model.pkl with "
                                 "`listener convert-fastai`)")
        return model.eval(), source

    @staticmethod
    def _random_model(architecture: str, seed: int) -> OrcaResNet:
        arch = RANDOM_DEFAULT_ARCHITECTURE if architecture == "auto" else architecture
        # A private RNG state: seeding must not disturb the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(arch)

    def _network(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W)`` float32 on the device -> ``(B,)`` float32 probability of class 1
        (an ensemble's: the mean of its members')."""
        if self.plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        p = _staged(*self._paths[0], x)
        for net, blocks in self._paths[1:]:
            p = p + _staged(net, blocks, x)
        return p / len(self._paths)

    def score_features(self, x: Tensor) -> np.ndarray:
        """Scores of model inputs.

        Args:
            x: ``(batch, 1, n_mels, frames)`` float32 dB spectrograms
                (``(B, 1, 256, 312)`` in production), on any device.

        Returns:
            ``(batch,)`` float64, ``softmax(logits)[:, 1]`` (class 1 = call).
        """
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"expected features of shape (batch, 1, n_mels, frames), "
                             f"got {tuple(x.shape)}")
        out = []
        with torch.inference_mode():
            for chunk in torch.split(x, self.cfg.batch_size):
                out.append(self._network(chunk.to(self.device, torch.float32)).cpu())
        return _to_numpy(out)

    def score_waves(self, waves: np.ndarray) -> np.ndarray:
        """Scores of prepared windows (frontend then network, ``cfg.batch_size`` at a time).

        Args:
            waves: ``(batch, samples)`` float32 mono audio at the frontend's
                rate (20 kHz), each already through ``Frontend.prepare``.

        Returns:
            ``(batch,)`` float64 probabilities of a call.
        """
        waves = np.asarray(waves)
        if waves.ndim != 2:
            raise ValueError(f"expected waves of shape (batch, samples), got {waves.shape}")
        out = []
        with torch.inference_mode():
            for start in range(0, waves.shape[0], self.cfg.batch_size):
                chunk = np.ascontiguousarray(waves[start:start + self.cfg.batch_size],
                                             dtype=np.float32)
                feats = self.frontend(torch.from_numpy(chunk).to(self.device))
                out.append(self._network(feats).cpu())
        return _to_numpy(out)


def _staged(net: OrcaResNet, blocks: list[tuple[torch.nn.Module, torch.dtype]],
            x: Tensor) -> Tensor:
    """One network's call probability, each stage in its own format."""
    # Stem and head in float32 whatever the stages' format (see _prepare_network);
    # the softmax too: p close to 0 or 1 needs it. Each block gets its input
    # in its own format (a no-op between blocks of one format).
    x = net.stem(x)
    for block, dtype in blocks:
        x = block(x.to(dtype))
    return torch.softmax(net.head(x.float()), dim=1)[:, 1]


def _block_dtypes(model: OrcaResNet, plan: ExecutionPlan) -> list[tuple[torch.nn.Module,
                                                                     torch.dtype]]:
    """Each residual block and the format it runs in under ``plan``.

    Raises:
        ValueError: a name in ``plan.float32_stages`` the network does not have.
    """
    blocks = residual_blocks(model)
    keep = set(plan.float32_stages)
    known = {n for n, _ in blocks} | {n.split(".")[0] for n, _ in blocks}
    if keep - known:
        raise ValueError(f"float32_stages {sorted(keep - known)} are not stages or blocks of "
                         f"a {model.architecture} (layer1..layer4, or one block: layer2.0)")
    return [(blk, torch.float32 if name in keep or name.split(".")[0] in keep else plan.dtype)
            for name, blk in blocks]


def _to_numpy(parts: list[Tensor]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(parts).numpy().astype(np.float64)


def _prepare_network(model: OrcaResNet | AveragedEnsemble, plan: ExecutionPlan,
                     device: torch.device) -> OrcaResNet | AveragedEnsemble:
    """Fold, move, convert and lay out ``model`` once, as ``plan`` says.

    The residual blocks (~98% of the multiply-adds) are converted to
    ``plan.dtype``, except those of ``plan.float32_stages`` (none unless
    configured: all in bf16 no decision of the trained demo network flipped;
    ``docs/model.md``). The stem stays float32: its input is dB values
    around -60 where bfloat16's step is 0.25-0.5 dB, a coarse quantisation
    of the very signal. The head stays float32: a few thousand
    multiply-adds, and the logits keep their precision.
    """
    if plan.fuse_batchnorm:
        for net in networks_of(model):
            fuse_batchnorm(net)  # in float64, before any cast
    model.to(device)
    for net in networks_of(model):
        for block, dtype in _block_dtypes(net, plan):
            block.to(dtype)
    if plan.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model
