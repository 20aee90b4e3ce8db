"""The network: shapes, state-dict names, parameter counts, head order, BN fusion."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from listener.model.network import (
    AdaptiveConcatPool2d,
    Bottleneck,
    build_model,
    fuse_batchnorm,
    parameter_count,
)


def randomise_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine weights (else fusion is a no-op)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_production_input_gives_two_logits(arch: str) -> None:
    model = build_model(arch).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 1, 256, 312))
    assert out.shape == (1, 2)
    assert out.dtype == torch.float32


@pytest.mark.parametrize(("arch", "expected"), [
    # torchvision's resnet18/50 counts (11 689 512 / 25 557 032) minus their
    # 1000-class fc, minus 2 of conv1's 3 input channels (64*2*49 = 6 272),
    # plus the fastai head: BN(2C) + Linear(2C,512) + BN(512) + Linear(512,2).
    ("resnet18", 11_689_512 - 513_000 - 6_272 + 2 * 1024 + 1024 * 512 + 512 + 1024 + 1026),
    ("resnet50", 25_557_032 - 2_049_000 - 6_272 + 2 * 4096 + 4096 * 512 + 512 + 1024 + 1026),
])
def test_parameter_count_matches_torchvision_plus_fastai_head(arch: str, expected: int) -> None:
    assert parameter_count(build_model(arch)) == expected


@pytest.mark.parametrize(("arch", "channels", "blocks", "convs"), [
    ("resnet18", 512, (2, 2, 2, 2), 2),
    ("resnet50", 2048, (3, 4, 6, 3), 3),
])
def test_state_dict_layout(arch: str, channels: int, blocks: tuple[int, ...], convs: int) -> None:
    sd = build_model(arch).state_dict()
    assert sd["conv1.weight"].shape == (64, 1, 7, 7)
    assert "conv1.bias" not in sd
    assert sd["head.bn1.weight"].shape == (2 * channels,)
    assert sd["head.fc1.weight"].shape == (512, 2 * channels)
    assert sd["head.bn2.running_var"].shape == (512,)
    assert sd["head.fc2.weight"].shape == (2, 512)
    assert sd["head.fc2.bias"].shape == (2,)
    for stage, n in enumerate(blocks, start=1):
        assert f"layer{stage}.{n - 1}.bn1.num_batches_tracked" in sd
        assert f"layer{stage}.{n}.conv1.weight" not in sd
    assert (f"layer1.0.conv{convs}.weight" in sd) and f"layer1.0.conv{convs + 1}.weight" not in sd
    assert all(k.split(".")[0] in {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "head"}
               for k in sd)


def test_bottleneck_strides_on_the_3x3_conv() -> None:
    # torchvision's "v1.5" ResNet50, which fastai v1 used.
    block = build_model("resnet50").layer2[0]
    assert isinstance(block, Bottleneck)
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


def test_concat_pool_puts_max_before_mean() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
    out = AdaptiveConcatPool2d()(x).flatten()
    assert out.tolist() == [6.0, 3.0]


def test_build_model_rejects_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="resnet34"):
        build_model("resnet34")


@pytest.mark.parametrize(("arch", "pairs"), [("resnet18", 1 + 8 * 2 + 3),
                                             ("resnet50", 1 + 16 * 3 + 4)])
def test_fused_model_computes_the_same(arch: str, pairs: int) -> None:
    model = randomise_batchnorm(build_model(arch))
    x = torch.randn(2, 1, 64, 80) * 30 - 40  # dB-like magnitudes
    with torch.no_grad():
        before = model(x)
        assert fuse_batchnorm(model) == pairs
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.modules()) == 2  # head kept
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())
    assert fuse_batchnorm(model) == 0  # a second call must not fold the statistics again
