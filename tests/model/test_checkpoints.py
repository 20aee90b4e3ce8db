"""Weights files: every layout and format loads to the same logits; errors name the problem."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import Tensor, nn

from listener.errors import ModelLoadError
from listener.model.checkpoints import (
    detect_layout,
    infer_architecture,
    load_model,
    load_state_dict_file,
    to_listener_layout,
)
from listener.model.network import build_model

# The spec's tables, written out independently of listener.model.checkpoints:
# (our prefix, the other layout's prefix).
HUB = [("conv1.", "model.conv1."), ("bn1.", "model.bn1."), ("layer1.", "model.layer1."),
       ("layer2.", "model.layer2."), ("layer3.", "model.layer3."), ("layer4.", "model.layer4."),
       ("head.bn1.", "model.fc.1."), ("head.fc1.", "model.fc.3."),
       ("head.bn2.", "model.fc.5."), ("head.fc2.", "model.fc.7.")]
FASTAI = [("conv1.", "0.0."), ("bn1.", "0.1."), ("layer1.", "0.4."), ("layer2.", "0.5."),
          ("layer3.", "0.6."), ("layer4.", "0.7."), ("head.bn1.", "1.2."),
          ("head.fc1.", "1.4."), ("head.bn2.", "1.6."), ("head.fc2.", "1.8.")]
TABLES = {"hub": HUB, "fastai": FASTAI, "listener": [(p, p) for p, _ in HUB]}


def rename(sd: dict[str, Tensor], layout: str) -> dict[str, Tensor]:
    out = {}
    for key, value in sd.items():
        ours, theirs = next((o, t) for o, t in TABLES[layout] if key.startswith(o))
        out[theirs + key[len(ours):]] = value
    return out


def trained_like(arch: str, seed: int = 0) -> nn.Module:
    """A network whose every tensor differs from a fresh one (so a wrong load shows)."""
    torch.manual_seed(seed)
    model = build_model(arch)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            elif name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif t.is_floating_point():
                t.add_(torch.randn_like(t) * 0.05)
    return model.eval()


def save(sd: dict[str, Tensor], path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    return path


X = torch.randn(2, 1, 64, 72) * 30 - 40


@pytest.fixture(scope="module")
def r18() -> nn.Module:
    return trained_like("resnet18")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("layout", ["hub", "fastai", "listener"])
def test_every_layout_loads_to_the_same_logits(r18: nn.Module, tmp_path: Path, layout: str,
                                               suffix: str) -> None:
    path = save(rename(r18.state_dict(), layout), tmp_path / f"w{suffix}")
    model, info = load_model(path)
    assert (info.layout, info.architecture) == (layout, "resnet18")
    assert not model.training
    with torch.no_grad():
        torch.testing.assert_close(model(X), r18(X), rtol=0, atol=0)


def test_resnet50_hub_safetensors_infers_architecture(tmp_path: Path) -> None:
    ref = trained_like("resnet50")
    path = save(rename(ref.state_dict(), "hub"), tmp_path / "model.safetensors")
    model, info = load_model(path)
    assert info.architecture == "resnet50" and info.parameter_count == 25_609_666
    x = X[:1, :, :32, :32]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)


def test_info_has_the_file_hash(r18: nn.Module, tmp_path: Path) -> None:
    path = save(r18.state_dict(), tmp_path / "w.safetensors")
    _, info = load_model(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.path == path and info.parameter_count == 11_699_138


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_torch_files(r18: nn.Module, tmp_path: Path, wrapper: str) -> None:
    # learn.save() writes {"model": sd, "opt": ...}; lightning-style files use "state_dict".
    path = tmp_path / "w.pth"
    torch.save({wrapper: rename(r18.state_dict(), "fastai"), "opt": {"lr": 0.01},
                "epoch": 3}, path)
    sd = load_state_dict_file(path)
    assert "0.0.weight" in sd
    assert load_model(path)[1].layout == "fastai"


def test_num_batches_tracked_may_be_absent(r18: nn.Module, tmp_path: Path) -> None:
    sd = {k: v for k, v in r18.state_dict().items() if not k.endswith("num_batches_tracked")}
    model, _ = load_model(save(rename(sd, "hub"), tmp_path / "w.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(model(X), r18(X), rtol=0, atol=0)
    assert int(model.state_dict()["bn1.num_batches_tracked"]) == 0


def test_detect_layout() -> None:
    assert detect_layout(["model.conv1.weight", "model.fc.7.bias"]) == "hub"
    assert detect_layout(["0.0.weight", "1.8.bias"]) == "fastai"
    assert detect_layout(["conv1.weight", "head.fc2.bias"]) == "listener"
    with pytest.raises(ModelLoadError, match=r"unrecognised.*encoder\.weight"):
        detect_layout(["encoder.weight"])


def test_infer_architecture_from_any_layout(r18: nn.Module) -> None:
    assert infer_architecture(rename(r18.state_dict(), "fastai")) == "resnet18"
    meta50 = build_model("resnet50").to("meta").state_dict()  # names and shapes only
    assert infer_architecture(rename(meta50, "hub")) == "resnet50"
    # ResNet34: BasicBlocks 3,4,6,3: recognisably a ResNet, but not one we run.
    sd34 = {f"layer{s}.{b}.conv1.weight": torch.zeros(1)
            for s, n in enumerate((3, 4, 6, 3), 1) for b in range(n)}
    with pytest.raises(ModelLoadError, match=r"BasicBlock stages of \(3, 4, 6, 3\)"):
        infer_architecture({"conv1.weight": torch.zeros(1), **sd34})


def test_to_listener_layout_keeps_unknown_names() -> None:
    out = to_listener_layout({"0.0.weight": torch.zeros(1), "2.weight": torch.zeros(1)}, "fastai")
    assert set(out) == {"conv1.weight", "2.weight"}


def test_mismatch_lists_missing_unexpected_and_shape_clashes(r18: nn.Module,
                                                             tmp_path: Path) -> None:
    sd = rename(r18.state_dict(), "fastai")
    del sd["1.8.weight"], sd["0.7.1.bn2.running_var"]
    sd["1.9.weight"] = torch.zeros(3)
    sd["1.4.weight"] = torch.zeros(512, 2048)
    path = save(sd, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and "resnet18" in msg
    assert "2 missing keys: 0.7.1.bn2.running_var, 1.8.weight" in msg
    assert "1 unexpected keys: 1.9.weight" in msg
    assert "1 shape clashes: 1.4.weight (512, 2048) in file vs (512, 1024) in model" in msg


def test_long_key_lists_are_truncated(r18: nn.Module, tmp_path: Path) -> None:
    sd = {k: v for k, v in r18.state_dict().items() if not k.startswith("layer4.")}
    with pytest.raises(ModelLoadError) as err:
        load_model(save(sd, tmp_path / "w.safetensors"), architecture="resnet18")
    msg = str(err.value)
    # num_batches_tracked is never reported missing (it is filled with 0).
    n = sum(k.startswith("layer4.") and "num_batches" not in k for k in r18.state_dict())
    assert f"{n} missing keys" in msg and f"... ({n - 10} more)" in msg
    assert msg.count("layer4.") == 10


def test_explicit_architecture_must_match(r18: nn.Module, tmp_path: Path) -> None:
    path = save(r18.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(ModelLoadError,
                       match="architecture is resnet50 but the file holds resnet18"):
        load_model(path, architecture="resnet50")
    assert load_model(path, architecture="resnet18")[1].architecture == "resnet18"


def test_missing_and_odd_files(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"nope\.pt: weights file not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_model(tmp_path)
    (tmp_path / "model.pkl").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(ModelLoadError, match=r"model\.pkl.*listener convert-fastai"):
        load_model(tmp_path / "model.pkl")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"unsupported weights file suffix '\.onnx'"):
        load_model(tmp_path / "w.onnx")
    (tmp_path / "junk.pt").write_bytes(b"hello, not a torch file")
    with pytest.raises(ModelLoadError, match=r"junk\.pt: not a readable torch file"):
        load_model(tmp_path / "junk.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{bad")
    with pytest.raises(ModelLoadError, match=r"junk\.safetensors: cannot read safetensors"):
        load_model(tmp_path / "junk.safetensors")


def test_non_tensor_entries_are_refused(tmp_path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(1), "note": "hello"}, tmp_path / "w.pt")
    with pytest.raises(ModelLoadError, match="1 entries are not name -> tensor: note"):
        load_state_dict_file(tmp_path / "w.pt")


def test_pickled_module_is_refused_not_run(tmp_path: Path) -> None:
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "export.pth")
    with pytest.raises(ModelLoadError, match=r"refused.*GLOBAL torch\.nn.*convert-fastai"):
        load_model(tmp_path / "export.pth")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pt_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"conv1.weight": torch.zeros(1), "x": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match=r"evil\.pt: refused.*system"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()


def test_zip_bomb_pt_is_refused_before_inflating(r18: nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    torch.save(r18.state_dict(), path)
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        prefix = zf.namelist()[0].split("/", 1)[0]
        with zf.open(f"{prefix}/padding.pkl", "w") as member:
            for _ in range(80):  # 80 MB of zeros deflate to ~80 kB
                member.write(bytes(1 << 20))
    assert path.stat().st_size < 60 << 20
    with pytest.raises(ModelLoadError, match=r"padding.pkl.*inflates to 83886080 bytes") as info:
        load_state_dict_file(path)
    assert str(path) in str(info.value)
