"""One-off conversion of a fastai v1 ``learn.export()`` file to ``.safetensors``.

The export (``model.pkl``) is a ``torch.save`` of a dict whose ``"model"``
entry is the pickled ``nn.Sequential(body, head)``. It is read with
:func:`~listener.model.fastai.torch_archive.load_torch_file`: no fastai needed, nothing
from the file imported or run, classes replaced by inert stubs. The stubs'
``_modules`` / ``_parameters`` / ``_buffers`` are walked into a fastai-layout
state dict, the module tree is checked against our network (layer order,
conv strides and paddings, BatchNorm eps: a mismatch there would load
"successfully" and score wrongly), the weights are loaded strictly and
written in our layout. A ``learn.save()`` file (``{"model": state_dict}``)
is accepted too.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from listener.atomic import atomic_write
from listener.digests import file_digest
from listener.errors import ModelLoadError, UnsafeCheckpointError
from listener.model.checkpoints import (
    detect_layout,
    infer_architecture,
    load_model,
    load_strict,
    to_listener_key,
    to_listener_layout,
)
from listener.model.fastai.torch_archive import load_torch_file
from listener.model.fastai.unpickle import Stub
from listener.model.limits import Limits
from listener.model.network import ARCHITECTURES, OrcaResNet, build_model

log = logging.getLogger(__name__)

_MAX_DEPTH = 32
_MAX_MODULES = 100_000
_BODY = ("Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d",
         "Sequential", "Sequential", "Sequential", "Sequential")
_HEAD = ("AdaptiveConcatPool2d", "Flatten", "BatchNorm1d", "Dropout", "Linear", "ReLU",
         "BatchNorm1d", "Dropout", "Linear")
# Hyperparameters that change the maths without changing any tensor shape.
_HYPER = {
    "Conv2d": ("stride", "padding", "dilation", "groups", "padding_mode"),
    "BatchNorm2d": ("eps",), "BatchNorm1d": ("eps",),
    "MaxPool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
}


@dataclass(frozen=True)
class ConversionResult:
    """What :func:`convert_fastai_export` read and wrote."""

    source: Path
    source_sha256: str
    source_format: str
    source_layout: str
    output: Path
    output_sha256: str
    architecture: str
    parameter_count: int
    tensor_count: int
    globals_seen: tuple[str, ...]

    def __str__(self) -> str:
        return (f"{self.architecture}, {self.parameter_count:,} parameters, "
                f"{self.tensor_count} tensors, sha256 {self.output_sha256[:16]} "
                f"(from {self.source_format} {self.source_layout} file {self.source.name}, "
                f"sha256 {self.source_sha256[:16]})")


def _is_module(obj: Any) -> bool:
    return isinstance(obj, Stub) and isinstance(obj.state_dict_items().get("_modules"), dict)


def _kind(obj: Any) -> str:
    """Short class name of a stub (``Conv2d``), or the Python type's name."""
    if isinstance(obj, Stub):
        return obj.pickle_global.rsplit(".", 1)[-1]
    return type(obj).__name__


def stub_state_dict(root: Stub, src: str) -> tuple[dict[str, Tensor], dict[str, Stub]]:
    """Walk a stubbed module tree like ``nn.Module.state_dict`` does.

    Returns:
        ``{"0.0.weight": tensor, ...}`` and ``{"0.0": conv stub, ...}`` (root is ``""``).
    """
    tensors: dict[str, Tensor] = {}
    modules: dict[str, Stub] = {}
    on_path: set[int] = set()

    def visit(mod: Stub, prefix: str, depth: int) -> None:
        if depth > _MAX_DEPTH or id(mod) in on_path or len(modules) >= _MAX_MODULES:
            raise UnsafeCheckpointError(f"{src}: the module tree is cyclic or too large")
        on_path.add(id(mod))
        modules[prefix[:-1]] = mod
        state = mod.state_dict_items()
        skip = state.get("_non_persistent_buffers_set") or set()
        for field in ("_parameters", "_buffers"):
            entries = state.get(field) or {}
            if not isinstance(entries, dict):
                raise ModelLoadError(f"{src}: {prefix or 'model.'}{field} is not a dict")
            for name, value in entries.items():
                if value is None or (field == "_buffers" and name in skip):
                    continue
                if not isinstance(value, Tensor):
                    raise ModelLoadError(f"{src}: {prefix}{name} is a {_kind(value)}, "
                                         f"not a tensor")
                tensors[f"{prefix}{name}"] = value
        for name, child in state["_modules"].items():
            if child is None:
                continue
            if not _is_module(child):
                raise ModelLoadError(f"{src}: submodule {prefix}{name} is a {_kind(child)}")
            visit(child, f"{prefix}{name}.", depth + 1)
        on_path.discard(id(mod))

    visit(root, "", 0)
    return tensors, modules


def _find_model(obj: Any, src: str) -> Stub | dict[str, Tensor]:
    """The network inside an export dict (or a bare pickled module / state dict)."""
    if isinstance(obj, dict) and "model" in obj:
        obj = obj["model"]
    if _is_module(obj):
        return obj
    if isinstance(obj, dict) and obj and all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        return obj
    raise ModelLoadError(f"{src}: found no network: expected a dict with a 'model' entry "
                         f"holding a module or a state dict, got {_kind(obj)}")


def _refuse_normalisation(obj: Any, src: Path) -> None:
    """fastai's ``Learner.export`` keeps ``data.normalize(...)`` stats here; our frontend
    (like production OrcaHello) never normalises, so such weights would see other inputs."""
    data = obj.get("data") if isinstance(obj, dict) else None
    stats = data.get("normalize") if isinstance(data, dict) else None
    if stats is not None:
        raise ModelLoadError(f"{src}: the export normalises its input (data.normalize: "
                             f"{_kind(stats)}); listener's frontend applies no normalisation, "
                             f"so these weights would score other numbers than they trained on")


def _normalise(name: str, value: Any) -> Any:
    if name in ("kernel_size", "stride", "padding", "dilation") and isinstance(value, int):
        return (value, value)
    return tuple(value) if isinstance(value, list | tuple) else value


def check_structure(modules: dict[str, Stub], model: OrcaResNet, src: str) -> None:
    """Refuse a module tree that would load but compute something else.

    Checks the body and head layer order (max-then-avg concat pooling first in
    the head) and, for every conv, BatchNorm and max-pool, the attributes in
    ``_HYPER`` against our network.
    """
    problems = []
    for prefix, expected in (("0", _BODY), ("1", _HEAD)):
        n = len(expected)
        found = tuple(_kind(modules[f"{prefix}.{i}"]) if f"{prefix}.{i}" in modules else "-"
                      for i in range(n + 1))
        if found[:n] != expected or found[n] != "-":
            problems.append(f"module {prefix} is ({', '.join(f for f in found if f != '-')}),"
                            f" expected ({', '.join(expected)})")
    ours = dict(model.named_modules())
    for path, stub in modules.items():
        attrs = _HYPER.get(_kind(stub))
        target = "maxpool" if path == "0.3" else to_listener_key(path + ".", "fastai")[:-1]
        if not attrs or target not in ours:
            continue
        state = stub.state_dict_items()
        for attr in attrs:
            if attr not in state:
                continue  # older torch did not store it: the default applies
            theirs, mine = _normalise(attr, state[attr]), _normalise(
                attr, getattr(ours[target], attr))
            same = (math.isclose(theirs, mine, rel_tol=1e-9) if isinstance(mine, float)
                    and isinstance(theirs, float) else theirs == mine)
            if not same:
                problems.append(f"{path}.{attr} is {theirs!r}, ours ({target}) is {mine!r}")
    if problems:
        raise ModelLoadError(f"{src}: the network in the export differs from ours: "
                             + "; ".join(problems[:10]))


def _check_paths(src: Path, out: Path, architecture: str) -> None:
    if out.suffix != ".safetensors":
        raise ModelLoadError(f"{out}: the output must be a .safetensors file")
    if out.resolve() == src.resolve():
        raise ModelLoadError(f"{out}: refusing to overwrite the input")
    if architecture not in ("auto", *ARCHITECTURES):
        raise ModelLoadError(f"unknown architecture {architecture!r}")


def convert_fastai_export(pkl_path: str | Path, out_path: str | Path, *,
                          architecture: str = "auto", extra_stub_modules: tuple[str, ...] = (),
                          limits: Limits | None = None) -> ConversionResult:
    """Convert a fastai v1 export (or ``learn.save`` file) to our ``.safetensors``.

    Args:
        pkl_path: the untrusted ``model.pkl`` (zip or legacy ``torch.save`` format).
        out_path: where to write; must end in ``.safetensors``. Written
            atomically (temporary file, then rename).
        architecture: ``"auto"`` or one of ``resnet18``/``resnet50`` to insist on.
        extra_stub_modules: module prefixes to accept as inert stubs beyond the
            built-in allow-list (e.g. a renamed fastai_audio package).
        limits: size caps for the untrusted file.

    Raises:
        UnsafeCheckpointError: the pickle names a global outside the allow-list
            (nothing was run) or breaks a size limit.
        ModelLoadError: no network found, or it does not match ours.
    """
    from safetensors.torch import save_file

    src, out = Path(pkl_path), Path(out_path)
    _check_paths(src, out, architecture)
    obj, seen, fmt = load_torch_file(src, limits, tuple(extra_stub_modules))
    log.debug("%s names these globals: %s", src, ", ".join(sorted(seen)))
    _refuse_normalisation(obj, src)
    found = _find_model(obj, str(src))
    modules: dict[str, Stub] = {}
    if isinstance(found, Stub):
        raw, modules = stub_state_dict(found, str(src))
    else:
        raw = found
        log.warning("%s holds a bare state dict: layer order and hyperparameters cannot be "
                    "checked", src)
    try:
        layout = detect_layout(raw.keys())
        arch = infer_architecture(raw)
    except ModelLoadError as err:
        raise ModelLoadError(f"{src}: {err}") from err
    if architecture not in ("auto", arch):
        raise ModelLoadError(f"{src}: holds {arch} weights, not {architecture}")
    model = build_model(arch)
    if modules and layout == "fastai":
        check_structure(modules, model, str(src))
    load_strict(model, to_listener_layout(raw, layout), source=str(src), layout=layout)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    source_sha = file_digest(src)
    meta = {"format": "pt", "layout": "listener", "architecture": arch,
            "converted_from": src.name, "source_sha256": source_sha}
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    _, info = load_model(out, arch)  # proves the written file loads strictly
    log.info("converted %s (%s, %s layout) -> %s: %s, %d parameters", src, fmt, layout, out,
             arch, info.parameter_count)
    return ConversionResult(source=src, source_sha256=source_sha, source_format=fmt,
                            source_layout=layout, output=out, output_sha256=info.sha256,
                            architecture=arch, parameter_count=info.parameter_count,
                            tensor_count=len(tensors), globals_seen=tuple(sorted(seen)))
