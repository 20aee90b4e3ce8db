"""Window audio -> call probability: the frontend and the network on one device.

:class:`Scorer` loads the weights (:mod:`listener.model.checkpoints`), picks the
device, applies the speed options of :class:`~listener.config.ModelConfig`
and scores batches. Speed options and why they are safe:

* ``fuse_batchnorm``: BatchNorm2d folded into the conv before it (exact up
  to float rounding, ~1e-6 on the scores);
* ``channels_last``: NHWC memory layout, faster convolutions on most CPUs
  and GPUs, same maths;
* ``cpu_threads``: ``torch.set_num_threads`` (process-wide; 0 leaves torch's default);
* ``fp16``: float16 autocast for the network on CUDA only (CPU half
  precision is slow and imprecise); the frontend always runs in float32.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from listener.config import FrontendConfig, ModelConfig
from listener.errors import ModelLoadError
from listener.model.checkpoints import load_model
from listener.model.frontend import Frontend
from listener.model.network import OrcaResNet, build_model, fuse_batchnorm, parameter_count

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


def autocast_dtype(device: torch.device | str, fp16: bool) -> torch.dtype | None:
    """The autocast dtype for the network: float16 on CUDA when asked, else ``None`` (off)."""
    return torch.float16 if fp16 and torch.device(device).type == "cuda" else None


class Scorer:
    """Scores 2 s windows with the configured network.

    Args:
        cfg: ``model`` section: weights, architecture, device, speed options.
        frontend_cfg: ``frontend`` section (defaults reproduce the trained model).
        allow_random_weights: with ``cfg.weights`` unset, build a seeded random
            network instead of failing (demo and tests only; ``info["random"]``).
        seed: the seed of that random network.

    Raises:
        ModelLoadError: weights missing, unreadable or not fitting, or
            ``device: cuda`` without CUDA.
    """

    def __init__(self, cfg: ModelConfig, frontend_cfg: FrontendConfig | None = None, *,
                 allow_random_weights: bool = False, seed: int = 0) -> None:
        self.cfg = cfg
        if cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)
        self.device = select_device(cfg.device)
        info: dict[str, Any]
        if cfg.weights is not None:
            model, ckpt = load_model(cfg.weights, cfg.architecture)
            info = {"weights": str(ckpt.path), "sha256": ckpt.sha256,
                    "layout": ckpt.layout, "random": False}
        elif allow_random_weights:
            model = self._random_model(cfg.architecture, seed)
            info = {"weights": None, "sha256": None, "layout": None, "random": True}
            log.warning("no model.weights: using a RANDOM %s (seed %d); scores are meaningless",
                        model.architecture, seed)
        else:
            raise ModelLoadError("model.weights is required: the path of a .safetensors or "
                                 ".pt file (convert a fastai model.pkl with "
                                 "`listener convert-fastai`)")
        model.eval()
        n_params = parameter_count(model)  # of the network as trained, before any fusion
        if cfg.fuse_batchnorm:
            fuse_batchnorm(model)
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model: OrcaResNet = model
        self.autocast = autocast_dtype(self.device, cfg.fp16)
        self.frontend = Frontend(frontend_cfg or FrontendConfig()).to(self.device).eval()
        self.info: dict[str, Any] = {
            "id": cfg.model_id, "architecture": model.architecture, **info,
            "device": str(self.device),
            "dtype": str(self.autocast or torch.float32).removeprefix("torch."),
            "parameter_count": n_params,
            "fuse_batchnorm": cfg.fuse_batchnorm, "channels_last": cfg.channels_last,
        }
        log.info("scorer ready: %s on %s (%s)", model.architecture, self.device,
                 self.info["dtype"])

    @staticmethod
    def _random_model(architecture: str, seed: int) -> OrcaResNet:
        arch = RANDOM_DEFAULT_ARCHITECTURE if architecture == "auto" else architecture
        # A private RNG state: seeding must not disturb the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(arch)

    def _network(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W)`` on the device -> ``(B,)`` float32 probability of class 1."""
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=self.autocast,
                            enabled=self.autocast is not None):
            logits = self.model(x)
        # softmax in float32 even under fp16 autocast: p close to 0/1 needs it.
        return torch.softmax(logits.float(), dim=1)[:, 1]

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


def _to_numpy(parts: list[Tensor]) -> np.ndarray:
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return torch.cat(parts).numpy().astype(np.float64)
