"""fastai export conversion: same logits as the original modules; hostile files never run.

The exports are built here the way fastai v1 pickles a Learner: real torch
modules arranged as ``Sequential(body, head)``, with stand-in classes
registered under fastai's and torchvision's module names (neither package is
installed) so the pickle names ``fastai.layers.Flatten`` and so on.
"""

from __future__ import annotations

import copy
import functools
import io
import os
import pathlib
import subprocess
import sys
import types
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import listener.model.network as lm
from listener.errors import ModelLoadError, UnsafeCheckpointError
from listener.model.checkpoints import load_model
from listener.model.fastai.convert import convert_fastai_export
from listener.model.limits import Limits

X = torch.randn(2, 1, 64, 96) * 30 - 40


@pytest.fixture(scope="module")
def fastai_names() -> Iterator[types.SimpleNamespace]:
    """Stand-in classes living in fake ``fastai.*``, ``torchvision.*`` and ``audio.*`` modules."""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("fastai", "fastai.layers", "fastai.basic_train", "fastai.metrics",
                     "torchvision", "torchvision.models", "torchvision.models.resnet",
                     "audio", "audio.data", "mypackage"):
            mp.setitem(sys.modules, name, types.ModuleType(name))
        yield _define_stand_ins()


def _define_stand_ins() -> types.SimpleNamespace:

    def place(obj: Any, module: str) -> Any:
        obj.__module__, obj.__qualname__ = module, obj.__name__
        setattr(sys.modules[module], obj.__name__, obj)
        return obj

    class BasicBlock(lm.BasicBlock):
        pass

    class Bottleneck(lm.Bottleneck):
        pass

    class AdaptiveConcatPool2d(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ap, self.mp = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.mp(x), self.ap(x)], 1)

    class Flatten(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.view(x.size(0), -1)

    class FlattenedLoss:
        def __init__(self, func: nn.Module) -> None:
            self.func = func

    class Learner:
        pass

    class Recorder:
        pass

    class AudioList:
        pass

    class AudioConfig:
        def __init__(self) -> None:
            self.sg_cfg = {"n_mels": 256, "hop": 256, "top_db": 100}
            self.duration = 4000

    class Thing:
        pass

    def accuracy(x: Any, y: Any) -> Any:
        return x

    ns = types.SimpleNamespace()
    for obj, module in ((BasicBlock, "torchvision.models.resnet"),
                        (Bottleneck, "torchvision.models.resnet"),
                        (AdaptiveConcatPool2d, "fastai.layers"), (Flatten, "fastai.layers"),
                        (FlattenedLoss, "fastai.layers"), (Learner, "fastai.basic_train"),
                        (Recorder, "fastai.basic_train"), (accuracy, "fastai.metrics"),
                        (AudioList, "audio.data"), (AudioConfig, "audio.data"),
                        (Thing, "mypackage")):
        setattr(ns, obj.__name__, place(obj, module))
    return ns


@pytest.fixture(scope="module")
def r18_net(fastai_names: types.SimpleNamespace) -> nn.Sequential:
    """One fastai-arranged resnet18, shared (tests that change it take a deep copy)."""
    return fastai_network(fastai_names, "resnet18")


def fastai_network(ns: types.SimpleNamespace, arch: str, seed: int = 0) -> nn.Sequential:
    """``Sequential(body, head)`` as fastai v1's cnn_learner builds it, with random BN stats."""
    torch.manual_seed(seed)
    block, layers, c = ((ns.BasicBlock, (2, 2, 2, 2), 512) if arch == "resnet18"
                        else (ns.Bottleneck, (3, 4, 6, 3), 2048))
    r = lm.OrcaResNet(block, layers, arch)
    body = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3,
                         r.layer4)
    head = nn.Sequential(ns.AdaptiveConcatPool2d(), ns.Flatten(), nn.BatchNorm1d(2 * c),
                         nn.Dropout(0.25), nn.Linear(2 * c, 512), nn.ReLU(inplace=True),
                         nn.BatchNorm1d(512), nn.Dropout(0.5), nn.Linear(512, 2))
    seq = nn.Sequential(body, head)
    with torch.no_grad():
        for m in seq.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return seq.eval()


def export(ns: types.SimpleNamespace, model: nn.Module, path: Path, *, zip_format: bool = True,
           **extra: Any) -> Path:
    """What ``learn.export()`` writes: a torch.save of the Learner's state dict."""
    state = {
        "opt_func": functools.partial(torch.optim.Adam, betas=(0.9, 0.99)),
        "loss_func": ns.FlattenedLoss(nn.CrossEntropyLoss()),
        "metrics": [ns.accuracy], "true_wd": True, "bn_wd": True, "wd": 0.01,
        "train_bn": True, "model_dir": "models",
        "callback_fns": [functools.partial(ns.Recorder, add_time=True)],
        "cb_state": {}, "model": model, "cls": ns.Learner,
        "data": {"x_cls": ns.AudioList, "config": ns.AudioConfig(),
                 "classes": ["negative", "positive"], "mean": np.array([0.5, 1.5]),
                 "path": pathlib.PosixPath("/data/train"), "raw": b"\x00\x01", "ids": {1, 2}},
        **extra,
    }
    with warnings.catch_warnings():
        # The legacy format warns that our stand-in classes have no source file.
        warnings.simplefilter("ignore", UserWarning)
        torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    return path


@pytest.mark.parametrize(("arch", "zip_format"), [("resnet18", True), ("resnet18", False),
                                                  ("resnet50", True)])
def test_converted_weights_give_the_original_logits(fastai_names: types.SimpleNamespace,
                                                    tmp_path: Path, arch: str,
                                                    zip_format: bool) -> None:
    original = fastai_network(fastai_names, arch)
    src = export(fastai_names, original, tmp_path / "model.pkl", zip_format=zip_format)
    result = convert_fastai_export(src, tmp_path / "out" / "model.safetensors")
    assert result.architecture == arch and result.source_layout == "fastai"
    assert result.source_format == ("zip" if zip_format else "legacy")
    assert "fastai.layers.AdaptiveConcatPool2d" in result.globals_seen
    assert not (tmp_path / "out" / "model.safetensors.tmp").exists()
    model, info = load_model(result.output)
    assert info.layout == "listener" and info.sha256 == result.output_sha256
    x = X if arch == "resnet18" else X[:1, :, :32, :48]
    with torch.no_grad():
        torch.testing.assert_close(model(x), original(x), rtol=0, atol=1e-6)


def test_an_export_with_normalisation_stats_is_refused(fastai_names: types.SimpleNamespace,
                                                       r18_net: nn.Sequential,
                                                       tmp_path: Path) -> None:
    data = {"classes": ["negative", "positive"], "normalize": {
        "mean": torch.tensor([-40.0]), "std": torch.tensor([20.0]), "do_x": True}}
    src = export(fastai_names, r18_net, tmp_path / "model.pkl", data=data)
    with pytest.raises(ModelLoadError, match=rf"{tmp_path / 'model.pkl'}: the export "
                       r"normalises its input \(data\.normalize: dict"):
        convert_fastai_export(src, tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()


def test_learn_save_state_dict_converts(r18_net: nn.Sequential, tmp_path: Path) -> None:
    # learn.save() writes {"model": state_dict, "opt": ...}: no module tree to check.
    torch.save({"model": r18_net.state_dict(), "opt": {"lr": 1e-3}}, tmp_path / "stage-1.pth")
    result = convert_fastai_export(tmp_path / "stage-1.pth", tmp_path / "m.safetensors")
    model, _ = load_model(result.output)
    with torch.no_grad():
        torch.testing.assert_close(model(X), r18_net(X), rtol=0, atol=1e-6)


def test_a_differently_strided_network_is_refused(
        fastai_names: types.SimpleNamespace, r18_net: nn.Sequential, tmp_path: Path) -> None:
    # Same tensor shapes, different maths: must not convert "successfully".
    net = copy.deepcopy(r18_net)
    net[0][5][0].conv1.stride = (1, 1)
    net[0][5][0].conv2.stride = (2, 2)
    src = export(fastai_names, net, tmp_path / "model.pkl")
    with pytest.raises(ModelLoadError, match=r"0\.5\.0\.conv1\.stride is \(1, 1\)"):
        convert_fastai_export(src, tmp_path / "m.safetensors")


def test_a_different_head_is_refused(
        fastai_names: types.SimpleNamespace, r18_net: nn.Sequential, tmp_path: Path) -> None:
    net = copy.deepcopy(r18_net)
    net[1][0] = nn.AdaptiveAvgPool2d(1)  # plain average pooling would halve the features
    with pytest.raises(ModelLoadError, match=r"module 1 is \(AdaptiveAvgPool2d, Flatten"):
        convert_fastai_export(export(fastai_names, net, tmp_path / "model.pkl"),
                              tmp_path / "m.safetensors")


class _Reduce:
    """Pickles as ``func(*args)``: how a hostile pickle smuggles in a call."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple:
        return (self.func, self.args)


@pytest.mark.parametrize("zip_format", [True, False])
@pytest.mark.parametrize(("func", "named"), [
    (os.system, "system"), (eval, "builtins.eval"), (subprocess.call, "subprocess.call"),
    (getattr, "builtins.getattr"),
])
def test_malicious_pickle_is_refused_and_never_runs(
        fastai_names: types.SimpleNamespace, r18_net: nn.Sequential, tmp_path: Path, func: Any,
        named: str, zip_format: bool) -> None:
    marker = tmp_path / "pwned"
    if func is getattr:
        payload = _Reduce(func, "text", "upper")
    elif func is eval:
        payload = _Reduce(func, f"open({str(marker)!r}, 'w')")
    elif func is subprocess.call:
        payload = _Reduce(func, ["touch", str(marker)])
    else:
        payload = _Reduce(func, f"touch {marker}")
    src = export(fastai_names, r18_net, tmp_path / "model.pkl", zip_format=zip_format,
                 evil=payload)
    with pytest.raises(UnsafeCheckpointError, match=rf"model\.pkl: refused .*{named}"):
        convert_fastai_export(src, tmp_path / "m.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "m.safetensors").exists()


def test_unknown_package_refused_unless_allowed(
        fastai_names: types.SimpleNamespace, r18_net: nn.Sequential, tmp_path: Path) -> None:
    src = export(fastai_names, r18_net, tmp_path / "model.pkl", thing=fastai_names.Thing())
    with pytest.raises(UnsafeCheckpointError, match=r"mypackage\.Thing"):
        convert_fastai_export(src, tmp_path / "m.safetensors")
    result = convert_fastai_export(src, tmp_path / "m.safetensors",
                                   extra_stub_modules=("mypackage",))
    assert "mypackage.Thing" in result.globals_seen


def _rewrite_zip(src: Path, dst: Path, extra: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        for name, data in extra.items():
            zout.writestr(name, data)
    return dst


def test_unexpected_archive_member_is_refused(
        fastai_names: types.SimpleNamespace, r18_net: nn.Sequential, tmp_path: Path) -> None:
    src = export(fastai_names, r18_net, tmp_path / "a.pkl")
    prefix = zipfile.ZipFile(src).namelist()[0].split("/")[0]
    bad = _rewrite_zip(src, tmp_path / "b.pkl", {f"{prefix}/payload.py": b"import os"})
    with pytest.raises(UnsafeCheckpointError, match=r"unexpected archive member.*payload\.py"):
        convert_fastai_export(bad, tmp_path / "m.safetensors")


@pytest.mark.parametrize(("limits", "match", "zip_format"), [
    (Limits(max_storage_bytes=100_000), "tensor data beyond the limits", True),
    (Limits(max_storage_bytes=100_000), "tensor data beyond the limits", False),
    (Limits(max_total_storage_bytes=1_000_000), "tensor data beyond the limits", True),
    (Limits(max_total_storage_bytes=1_000_000), "tensor data beyond the limits", False),
    (Limits(max_pickle_bytes=1_000), "data.pkl is .* bytes, over the 1000 limit", True),
    (Limits(max_file_bytes=1_000), "over the 1000 byte limit", True),
    (Limits(max_file_bytes=1_000), "over the 1000 byte limit", False),
])
def test_size_limits(
        fastai_names: types.SimpleNamespace, r18_net: nn.Sequential, tmp_path: Path,
        limits: Limits, match: str, zip_format: bool) -> None:
    src = export(fastai_names, r18_net, tmp_path / "a.pkl", zip_format=zip_format)
    with pytest.raises(UnsafeCheckpointError, match=match):
        convert_fastai_export(src, tmp_path / "m.safetensors", limits=limits)


class _OutOfBounds:
    """A tensor whose view claims more elements than its storage holds."""

    def __reduce__(self) -> tuple:
        storage = torch.zeros(4)._typed_storage()
        return (torch._utils._rebuild_tensor_v2, (storage, 0, (10**6,), (1,), False, OrderedDict()))


def test_tensor_views_past_their_storage_are_refused(
        fastai_names: types.SimpleNamespace, r18_net: nn.Sequential, tmp_path: Path) -> None:
    src = export(fastai_names, r18_net, tmp_path / "a.pkl",
                 bad=_OutOfBounds())
    with pytest.raises(UnsafeCheckpointError, match="reaches past its storage"):
        convert_fastai_export(src, tmp_path / "m.safetensors")


def test_not_a_torch_file(tmp_path: Path) -> None:
    (tmp_path / "x.pkl").write_bytes(b"GIF89a...")
    with pytest.raises(ModelLoadError, match=r"not a torch\.save file"):
        convert_fastai_export(tmp_path / "x.pkl", tmp_path / "m.safetensors")
    buf = io.BytesIO()
    torch.save({"something": [1, 2, 3]}, buf)
    (tmp_path / "y.pkl").write_bytes(buf.getvalue())
    with pytest.raises(ModelLoadError, match="found no network"):
        convert_fastai_export(tmp_path / "y.pkl", tmp_path / "m.safetensors")
    with pytest.raises(ModelLoadError, match=r"must be a \.safetensors"):
        convert_fastai_export(tmp_path / "y.pkl", tmp_path / "m.pt")


class _StatefulTensor:
    """A real tensor followed by BUILD: a pickle trying to set a tensor's internals."""

    def __reduce__(self) -> tuple:
        storage = torch.zeros(4)._typed_storage()
        return (torch._utils._rebuild_tensor_v2,
                (storage, 0, (4,), (1,), False, OrderedDict()), {"data": 1})


def test_state_can_only_be_set_on_stubs(
        fastai_names: types.SimpleNamespace, r18_net: nn.Sequential, tmp_path: Path) -> None:
    src = export(fastai_names, r18_net, tmp_path / "a.pkl", bad=_StatefulTensor())
    with pytest.raises(UnsafeCheckpointError, match="sets the state of a Tensor"):
        convert_fastai_export(src, tmp_path / "m.safetensors")


@pytest.mark.parametrize("zip_format", [True, False])
def test_truncated_export(fastai_names: types.SimpleNamespace, r18_net: nn.Sequential,
                          tmp_path: Path, zip_format: bool) -> None:
    src = export(fastai_names, r18_net, tmp_path / "a.pkl", zip_format=zip_format)
    data = src.read_bytes()
    src.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"a\.pkl: "):
        convert_fastai_export(src, tmp_path / "m.safetensors")
