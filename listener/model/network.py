"""The OrcaHello network: a 1-channel ResNet body and fastai's classifier head.

Written out here (no torchvision) so the state-dict names are ours and stable.
Input ``(batch, 1, n_mels, frames)`` float32 dB spectrograms (``(B, 1, 256, 312)``
in production, but any spatial size of 32 or more works); output
``(batch, 2)`` logits, class 1 = call.

Our state-dict layout (``"listener"``), torchvision names for the body::

    conv1.weight                     Conv2d(1, 64, 7, stride 2, pad 3, no bias)
    bn1.{weight,bias,running_mean,running_var,num_batches_tracked}
    layer{1..4}.{i}.conv{1,2[,3]}.weight, .bn{1,2[,3]}.*, .downsample.{0,1}.*
    head.bn1.*    BatchNorm1d(2C)          (C = 512 resnet18, 2048 resnet50)
    head.fc1.*    Linear(2C, 512)
    head.bn2.*    BatchNorm1d(512)
    head.fc2.*    Linear(512, 2)

Bottleneck blocks put the stride on the 3x3 conv (torchvision's "ResNet v1.5",
which fastai v1 used), not on the first 1x1 conv.

A network trained with ``listener train --band-norm`` also holds
``input_norm.band_median`` (a one-element marker, no weights): its stem first
subtracts each mel band's median over the window's frames. OrcaHello's
network has no such stage; the key in the weights is what tells a loader to
build it (:func:`build_for`).

An averaged ensemble (``listener ensemble``) holds several such networks,
each under ``members.<i>.`` in our layout; it scores the mean of the
members' call probabilities (:class:`AveragedEnsemble`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from listener.model.kernels import warm_vector_maths

log = logging.getLogger(__name__)

Architecture = Literal["resnet18", "resnet50"]
ARCHITECTURES: tuple[Architecture, ...] = ("resnet18", "resnet50")
#: The state-dict key of a band-normalised network (see the module docstring).
BAND_NORM_KEY = "input_norm.band_median"
#: The key prefix of an averaged ensemble's members: ``members.0.conv1.weight``.
MEMBERS_PREFIX = "members."


def is_ensemble(names: Iterable[str]) -> bool:
    """Whether state-dict names are an averaged ensemble's (any under :data:`MEMBERS_PREFIX`)."""
    return any(k.startswith(MEMBERS_PREFIX) for k in names)


def subtract_band_median(x: Tensor) -> Tensor:
    """``(B, 1, n_mels, frames)`` dB -> each band minus its median over the frames.

    A gain is the same dB offset in every band and a hydrophone's noise floor a
    steady offset per band; both cancel, while a call, which crosses a band in
    a fraction of the window, stands out of that band's median.
    """
    return x - x.median(dim=-1, keepdim=True).values


class BandMedianNorm(nn.Module):
    """:func:`subtract_band_median` as the network's first stage.

    Its one buffer is a marker (:data:`BAND_NORM_KEY`): it travels with the
    weights in every file the network is saved to, so no loader can build the
    network without this stage, or with it where it was not trained.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("band_median", torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        return subtract_band_median(x)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a residual (ResNet18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """``(B, inplanes, H, W) -> (B, planes, H/stride, W/stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, and a residual (ResNet50)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        """``(B, inplanes, H, W) -> (B, 4 * planes, H/stride, W/stride)``."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class AdaptiveConcatPool2d(nn.Module):
    """fastai's pooling: ``cat([max, avg])`` over H and W; ``(B, C, H, W) -> (B, 2C, 1, 1)``.

    The order (max first) matters: the first BatchNorm1d of the head was
    trained on it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mp = nn.AdaptiveMaxPool2d(1)
        self.ap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.mp(x), self.ap(x)], dim=1)


class Head(nn.Module):
    """fastai v1 ``create_head(2C, 2, lin_ftrs=[512], ps=0.5)``: ``(B, C, H, W) -> (B, 2)``.

    Dropouts are 0.25 then 0.5 (fastai halves ``ps`` for all but the last);
    they are no-ops in eval mode but kept so training-mode use matches.
    """

    def __init__(self, channels: int, hidden: int = 512, n_classes: int = 2) -> None:
        super().__init__()
        self.pool = AdaptiveConcatPool2d()
        self.flatten = nn.Flatten()
        self.bn1 = nn.BatchNorm1d(2 * channels)
        self.drop1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(2 * channels, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.bn2 = nn.BatchNorm1d(hidden)
        self.drop2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop1(self.bn1(self.flatten(self.pool(x))))
        x = self.drop2(self.bn2(self.relu(self.fc1(x))))
        return self.fc2(x)


class OrcaResNet(nn.Module):
    """ResNet body with a 1-channel stem and the fastai head.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, ``(2, 2, 2, 2)`` or ``(3, 4, 6, 3)``.
        architecture: the name recorded in :attr:`architecture`.
        band_norm: start with :class:`BandMedianNorm`.

    ``forward``: ``(B, 1, n_mels, frames)`` float32 -> ``(B, 2)`` logits.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: tuple[int, ...],
                 architecture: str, band_norm: bool = False) -> None:
        super().__init__()
        self.architecture = architecture
        self.input_norm = BandMedianNorm() if band_norm else None
        self.inplanes = 64
        self.conv1 = nn.Conv2d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0], stride=1)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.head = Head(512 * block.expansion)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int,
                    blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def stem(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W) -> (B, 64, H/4, W/4)``: [band norm,] conv1, BatchNorm, ReLU, max-pool."""
        if self.input_norm is not None:
            x = self.input_norm(x)
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def stages(self, x: Tensor) -> Tensor:
        """``(B, 64, H/4, W/4) -> (B, C, H/32, W/32)``: the four residual stages."""
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_features(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W) -> (B, C, H/32, W/32)`` body activations."""
        return self.stages(self.stem(x))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, 1, n_mels, frames)`` float32 -> ``(B, 2)`` logits."""
        return self.head(self.forward_features(x))

    @property
    def band_norm(self) -> bool:
        return self.input_norm is not None


def mean_probabilities(logits: list[Tensor]) -> Tensor:
    """``log`` of the mean of each member's softmax: the logits whose softmax is
    that mean (the log-probabilities of one distribution already sum to one)."""
    logp = torch.stack([torch.log_softmax(x.float(), dim=1) for x in logits])
    return torch.logsumexp(logp, dim=0) - math.log(len(logits))


class AveragedEnsemble(nn.Module):
    """Several networks of one architecture scoring the same input; the call
    probability is the mean of theirs.

    Networks trained on different inputs (plain and band-normalised) make
    different errors, so their mean ranks windows better than either alone,
    at the cost of every member's compute. ``forward`` returns
    :func:`mean_probabilities`, so ``softmax(forward(x))`` is the mean, as
    every caller of a single network computes it.
    """

    def __init__(self, members: list[OrcaResNet]) -> None:
        super().__init__()
        archs = {m.architecture for m in members}
        if len(members) < 2 or len(archs) != 1:
            raise ValueError(f"an averaged ensemble needs two or more networks of one "
                             f"architecture; got {len(members)} of {sorted(archs)}")
        self.members = nn.ModuleList(members)
        self.architecture: str = archs.pop()

    def networks(self) -> list[OrcaResNet]:
        return [m for m in self.members if isinstance(m, OrcaResNet)]

    def forward(self, x: Tensor) -> Tensor:
        return mean_probabilities([m(x) for m in self.members])


def networks_of(model: OrcaResNet | AveragedEnsemble) -> list[OrcaResNet]:
    """The networks a model scores with: itself, or an ensemble's members."""
    return model.networks() if isinstance(model, AveragedEnsemble) else [model]


def describe(model: nn.Module) -> str:
    """How logs name a model: its architecture, or ``ensemble of 2 resnet18``."""
    arch = str(getattr(model, "architecture", "unknown"))
    if isinstance(model, AveragedEnsemble):
        return f"ensemble of {len(model.networks())} {arch}"
    return arch


def build_model(arch: str, band_norm: bool = False) -> OrcaResNet:
    """A freshly initialised network for ``"resnet18"`` or ``"resnet50"`` (train mode)."""
    warm_vector_maths()
    if arch == "resnet18":
        return OrcaResNet(BasicBlock, (2, 2, 2, 2), "resnet18", band_norm)
    if arch == "resnet50":
        return OrcaResNet(Bottleneck, (3, 4, 6, 3), "resnet50", band_norm)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")


def build_for(arch: str, state: Mapping[str, Tensor]) -> OrcaResNet:
    """The network that ``state`` (listener names) loads into: band-normalised when
    it holds :data:`BAND_NORM_KEY`."""
    return build_model(arch, band_norm=BAND_NORM_KEY in state)


def parameter_count(model: nn.Module) -> int:
    """Number of learned scalars (parameters, not BatchNorm running statistics)."""
    return sum(p.numel() for p in model.parameters())


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (eval statistics) into ``conv`` in place.

    ``bn(conv(x)) = s * (W x + b - mean) + beta`` with ``s = gamma / sqrt(var + eps)``,
    so ``W' = s W`` and ``b' = s (b - mean) + beta``. Done in float64 so the
    folded float32 weights are as close as rounding allows.
    """
    assert bn.running_mean is not None and bn.running_var is not None
    w = conv.weight.detach().double()
    mean = bn.running_mean.double()
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(mean)
    new_w = w * scale.reshape(-1, 1, 1, 1)
    new_b = (bias - mean) * scale + bn.bias.detach().double()
    conv.weight = nn.Parameter(new_w.to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(new_b.to(conv.weight.dtype), requires_grad=False)


def fuse_batchnorm(model: OrcaResNet) -> int:
    """Fold every BatchNorm2d of the body into the conv before it; returns how many.

    Only valid for inference (eval statistics are baked in), so the model is
    put in eval mode. The head's BatchNorm1d layers are left alone: they cost
    nothing next to the body, and folding them would change the head's keys.
    The fused model's ``state_dict`` no longer matches the checkpoint layout.
    """
    model.eval()
    pairs: list[tuple[nn.Module, str, str]] = [(model, "conv1", "bn1")]
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for blk in stage:
            n = 3 if isinstance(blk, Bottleneck) else 2
            pairs += [(blk, f"conv{i}", f"bn{i}") for i in range(1, n + 1)]
            if isinstance(blk.downsample, nn.Module):
                pairs.append((blk.downsample, "0", "1"))
    fused = 0
    for parent, conv_name, bn_name in pairs:
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        if not isinstance(bn, nn.BatchNorm2d):
            continue  # already fused: fusing twice would apply the statistics twice
        _fold(conv, bn)
        setattr(parent, bn_name, nn.Identity())
        fused += 1
    log.debug("fused %d BatchNorm2d layers into their convs", fused)
    return fused


def residual_blocks(model: OrcaResNet) -> list[tuple[str, nn.Module]]:
    """The body's residual blocks in order, named ``layer{stage}.{index}`` (``layer2.0``)."""
    return [(f"layer{i}.{j}", blk)
            for i, stage in enumerate((model.layer1, model.layer2, model.layer3, model.layer4), 1)
            for j, blk in enumerate(stage)]


def multiply_adds(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-adds of one input, per conv / linear layer (by module name).

    Counted from the shapes a real forward pass produces (one item of
    ``input_shape``, which includes the batch dimension of 1): a convolution
    costs ``output elements x in_channels / groups x kernel area``.
    """
    counts: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            hooks.append(mod.register_forward_hook(
                lambda _m, _i, out, n=name, k=per_out: counts.__setitem__(n, out.numel() * k)))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(
                lambda m, _i, out, n=name: counts.__setitem__(n, out.numel() * m.in_features)))
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(input_shape))
    finally:
        for h in hooks:
            h.remove()
    return counts
