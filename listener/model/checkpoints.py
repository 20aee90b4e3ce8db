"""Reading weights files and fitting them, strictly, to our network.

Three state-dict layouts are understood (``docs/model.md`` has the full table):

* ``"listener"``: ours (``conv1.*``, ``layer1..4.*``, ``head.{bn1,fc1,bn2,fc2}.*``);
* ``"hub"``: the PyTorch port published on a model hub (``model.conv1.*``,
  ``model.layer1..4.*``, head under ``model.fc.{1,3,5,7}.*``);
* ``"fastai"``: ``learn.model.state_dict()`` of the fastai v1 Learner
  (``0.0.*`` conv1, ``0.4..0.7.*`` layers, head ``1.{2,4,6,8}.*``).

Only ``.safetensors`` and weights-only ``.pt``/``.pth`` files are read here;
a fastai ``model.pkl`` must first go through ``listener convert-fastai``, since
loading it would unpickle arbitrary objects. Every failure is a
:class:`~listener.errors.ModelLoadError` whose message names the file.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from listener.digests import file_digest
from listener.errors import ModelLoadError
from listener.model.limits import Limits
from listener.model.network import (
    ARCHITECTURES,
    OrcaResNet,
    build_for,
    describe,
    is_ensemble,
    parameter_count,
)
from listener.model.snapshot import CONFIG_NAME, resolve_weights
from listener.numerals import ascii_int

log = logging.getLogger(__name__)

Layout = Literal["hub", "fastai", "listener"]

_STAGES = tuple(f"layer{i}." for i in range(1, 5))
# (prefix in the file's layout, prefix in ours); everything under a prefix
# keeps its torchvision name, so a prefix swap is the whole conversion.
_PREFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "listener": (),
    "hub": (
        ("model.conv1.", "conv1."), ("model.bn1.", "bn1."),
        *((f"model.{s}", s) for s in _STAGES),
        ("model.fc.1.", "head.bn1."), ("model.fc.3.", "head.fc1."),
        ("model.fc.5.", "head.bn2."), ("model.fc.7.", "head.fc2."),
    ),
    "fastai": (
        ("0.0.", "conv1."), ("0.1.", "bn1."),
        *((f"0.{i + 4}.", s) for i, s in enumerate(_STAGES)),
        ("1.2.", "head.bn1."), ("1.4.", "head.fc1."),
        ("1.6.", "head.bn2."), ("1.8.", "head.fc2."),
    ),
}
_TORCH_SUFFIXES = (".pt", ".pth", ".bin")
# The caps convert-fastai applies to untrusted archives (64 MB of pickle, ...).
_LIMITS = Limits()
_LIST_LIMIT = 10


@dataclass(frozen=True)
class CheckpointInfo:
    """What was loaded: the file, its SHA-256, its layout and the network it fits."""

    path: Path
    sha256: str
    layout: str
    architecture: str
    parameter_count: int


def _shorten(items: list[str]) -> str:
    """``a, b, c`` for short lists; the first ten and a count for long ones."""
    if len(items) <= _LIST_LIMIT:
        return ", ".join(items)
    return ", ".join(items[:_LIST_LIMIT]) + f", ... ({len(items) - _LIST_LIMIT} more)"


def _only_tensors(obj: Any, path: Path) -> dict[str, Tensor]:
    """Unwrap ``{"state_dict": sd}`` / ``{"model": sd}`` and check every value is a tensor."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise ModelLoadError(f"{path}: expected a state dict (a mapping of names to tensors), "
                             f"found {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        raise ModelLoadError(f"{path}: not a state dict: {len(bad)} entries are not "
                             f"name -> tensor: {_shorten(bad)}")
    if not obj:
        raise ModelLoadError(f"{path}: the state dict is empty")
    return dict(obj)


def _weights_only_reason(err: Exception) -> str:
    """The one useful line of torch's long weights-only refusal (names the global)."""
    for line in str(err).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return line.strip().rstrip(".")
    return "weights-only loading refused it"


def _check_archive_sizes(path: Path, limits: Limits = _LIMITS) -> None:
    """Refuse a torch zip archive whose members would inflate past convert-fastai's
    limits, before torch.load allocates them (a zip bomb)."""
    if not zipfile.is_zipfile(path):
        return  # the legacy format is read as it is, with no inflation
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as err:
        raise ModelLoadError(f"{path}: not a readable torch file: {err}") from err
    if len(infos) > limits.max_members:
        raise ModelLoadError(f"{path}: refused: {len(infos)} archive members "
                             f"(at most {limits.max_members})")
    total = 0
    for info in infos:
        # torch.save stores members uncompressed; only the pickle is small.
        cap = (limits.max_pickle_bytes if info.compress_type != zipfile.ZIP_STORED
               or info.filename.endswith(".pkl") else limits.max_storage_bytes)
        total += info.file_size
        if info.file_size > cap or total > limits.max_total_storage_bytes:
            raise ModelLoadError(f"{path}: refused: archive member {info.filename!r:.120} "
                                 f"inflates to {info.file_size} bytes ({total} in all); at "
                                 f"most {cap} for it and {limits.max_total_storage_bytes} "
                                 f"in all")


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a ``.safetensors`` or weights-only ``.pt``/``.pth`` file onto the CPU.

    A torch file may hold a bare state dict or a dict with a ``"state_dict"``
    or ``"model"`` entry (``learn.save`` files have the latter). Pickled
    objects other than tensors and plain containers are refused
    (``weights_only=True``), so a hostile file cannot run code here.

    Raises:
        ModelLoadError: missing or unreadable file, unsupported suffix, or
            content that is not a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"{p}: weights file not found" if not p.exists()
                             else f"{p}: not a regular file")
    suffix = p.suffix.lower()
    if suffix == ".pkl":
        raise ModelLoadError(f"{p}: a .pkl file is a pickled fastai Learner, which the daemon "
                             f"never unpickles; convert it once with "
                             f"`listener convert-fastai {p} model.safetensors`")
    if suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
            return _only_tensors(load_file(str(p), device="cpu"), p)
        except ModelLoadError:
            raise
        except Exception as err:  # safetensors raises its own error types and OSError
            raise ModelLoadError(f"{p}: cannot read safetensors file: {err}") from err
    if suffix not in _TORCH_SUFFIXES:
        raise ModelLoadError(f"{p}: unsupported weights file suffix {p.suffix!r}; expected "
                             f".safetensors, .pt or .pth")
    return load_torch_tensors(p)


def load_torch_tensors(p: Path, *, mmap: bool = False) -> dict[str, Tensor]:
    """A torch weights file's tensors, through torch's restricted loader only.

    ``mmap``: map the storages instead of reading them (a zip file; the
    start-up checks look at names without paying for the weights).

    Raises:
        ModelLoadError: too large, not a torch file, or pickled objects other
            than tensors (named, with the fastai conversion hint).
    """
    _check_archive_sizes(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True,
                         mmap=mmap and zipfile.is_zipfile(p))
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise ModelLoadError(f"{p}: not a readable torch file: {err}") from err
        raise ModelLoadError(
            f"{p}: refused: the file pickles Python objects other than tensors "
            f"({_weights_only_reason(err)}). If it is a fastai export, convert it with "
            f"`listener convert-fastai {p} model.safetensors`") from err
    except Exception as err:  # torch.load raises KeyError, RuntimeError, EOFError... on junk
        raise ModelLoadError(f"{p}: not a readable torch file: "
                             f"{type(err).__name__}: {err}") from err
    return _only_tensors(obj, p)


def detect_layout(keys: Iterable[str]) -> Layout:
    """Which naming a state dict uses: ``"hub"``, ``"fastai"`` or ``"listener"``.

    Raises:
        ModelLoadError: none of the three (the message shows the first keys).
    """
    names = list(keys)
    present = set(names)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in names)

    if has("model.conv1.") or has("model.layer1."):
        return "hub"
    if "0.0.weight" in present or has("0.4."):
        return "fastai"
    if "conv1.weight" in present or has("layer1."):
        return "listener"
    raise ModelLoadError(f"unrecognised state-dict layout (expected hub 'model.conv1.*', "
                         f"fastai '0.0.*' or listener 'conv1.*' names); first keys: "
                         f"{_shorten(sorted(names))}")


def _rename(key: str, table: tuple[tuple[str, str], ...], reverse: bool = False) -> str:
    for theirs, ours in table:
        src, dst = (ours, theirs) if reverse else (theirs, ours)
        if key.startswith(src):
            return dst + key[len(src):]
    return key


def to_listener_layout(sd: Mapping[str, Tensor], layout: str) -> dict[str, Tensor]:
    """Rename ``sd`` from ``layout`` to ours; names outside the known prefixes pass through.

    Unknown names are kept (not dropped) so a strict load reports them.
    """
    if layout not in _PREFIXES:
        raise ValueError(f"unknown layout {layout!r}; expected hub, fastai or listener")
    return {_rename(k, _PREFIXES[layout]): v for k, v in sd.items()}


def to_listener_key(key: str, layout: str) -> str:
    """A tensor's (or module's, with a trailing dot) name in ``layout`` -> ours."""
    return _rename(key, _PREFIXES[layout])


def from_listener_key(key: str, layout: str) -> str:
    """Our name for a tensor -> its name in ``layout`` (for error messages)."""
    return _rename(key, _PREFIXES[layout], reverse=True)


def infer_architecture(sd: Mapping[str, Tensor]) -> str:
    """``"resnet18"`` or ``"resnet50"`` from the block structure in the names.

    Bottleneck blocks have a ``conv3``; the block count per stage tells the
    depth. Any of the three layouts is accepted.

    Raises:
        ModelLoadError: the names fit neither network.
    """
    keys = list(to_listener_layout(sd, detect_layout(sd.keys())).keys())
    bottleneck = any(".conv3." in k for k in keys if k.startswith("layer"))
    counts = []
    for stage in _STAGES:
        blocks = {k[len(stage):].split(".", 1)[0] for k in keys if k.startswith(stage)}
        counts.append(len({b for b in blocks if ascii_int(b) is not None}))
    found = (bottleneck, tuple(counts))
    if found == (False, (2, 2, 2, 2)):
        return "resnet18"
    if found == (True, (3, 4, 6, 3)):
        return "resnet50"
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    raise ModelLoadError(f"the weights hold {kind} stages of {tuple(counts)} blocks; only "
                         f"resnet18 (BasicBlock 2,2,2,2) and resnet50 (Bottleneck 3,4,6,3) "
                         f"are supported")


def load_strict(model: nn.Module, sd: Mapping[str, Tensor], *, source: str,
                layout: str = "listener") -> None:
    """Load ``sd`` (our layout) into ``model``, all or nothing.

    ``num_batches_tracked`` buffers are only used in training, and many files
    drop them: missing ones are filled with 0, present ones are loaded.

    Raises:
        ModelLoadError: naming ``source`` and listing missing keys, unexpected
            keys (in the file's own naming) and shape clashes.
    """
    expected = model.state_dict()
    sd = dict(sd)
    for key in expected:
        if key.endswith(".num_batches_tracked") and key not in sd:
            sd[key] = torch.zeros((), dtype=torch.long)
    missing = [from_listener_key(k, layout) for k in expected if k not in sd]
    unexpected = [from_listener_key(k, layout) for k in sd if k not in expected]
    clashes = [f"{from_listener_key(k, layout)} {tuple(v.shape)} in file vs "
               f"{tuple(expected[k].shape)} in model"
               for k, v in sd.items() if k in expected and v.shape != expected[k].shape]
    if missing or unexpected or clashes:
        arch = getattr(model, "architecture", type(model).__name__)
        parts = [f"{source}: the weights do not fit the {arch} network ({layout} layout)"]
        if missing:
            parts.append(f"{len(missing)} missing keys: {_shorten(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_shorten(unexpected)}")
        if clashes:
            parts.append(f"{len(clashes)} shape clashes: {_shorten(clashes)}")
        raise ModelLoadError("; ".join(parts))
    model.load_state_dict(sd, strict=True)


def fit_network(raw: Mapping[str, Tensor], architecture: str, source: str,
                named_by: Path | None = None) -> tuple[OrcaResNet, str]:
    """The network a state dict of any layout loads into, loaded strictly, and the layout
    (``ModelLoadError`` naming ``source``: unknown layout or architecture, or a misfit);
    ``named_by``: the snapshot config.json that named ``architecture``, not the YAML."""
    try:
        layout = detect_layout(raw.keys())
    except ModelLoadError as err:
        raise ModelLoadError(f"{source}: {err}") from err
    sd = to_listener_layout(raw, layout)
    try:
        inferred: str | None = infer_architecture(sd)
    except ModelLoadError as err:
        if architecture == "auto":
            raise ModelLoadError(f"{source}: cannot tell the architecture: {err}") from err
        inferred = None  # let the strict load below list what is wrong
    if architecture != "auto" and inferred is not None and inferred != architecture:
        if named_by is not None:
            raise ModelLoadError(f"{named_by} names {architecture} but {Path(source).name} "
                                 f"holds {inferred} weights")
        raise ModelLoadError(f"{source}: model.architecture is {architecture} but the file "
                             f"holds {inferred} weights (set architecture: auto or {inferred})")
    model = build_for(inferred if architecture == "auto" and inferred else architecture, sd)
    load_strict(model, sd, source=source, layout=layout)
    return model.eval(), layout


def load_model(path: str | Path, architecture: str = "auto") -> tuple[OrcaResNet, CheckpointInfo]:
    """Read a weights file, build the matching network and load it strictly.

    Args:
        path: ``.safetensors``, ``.pt`` or ``.pth`` in any of the three layouts,
            or a hub snapshot folder (:mod:`listener.model.snapshot`), whose
            ``config.json`` gives the architecture when ``architecture`` is auto.
        architecture: ``"auto"`` (from the file's names), ``"resnet18"`` or ``"resnet50"``.

    Returns:
        The network in eval mode on the CPU, and what was loaded.

    Raises:
        ModelLoadError: the file is missing, unreadable, in an unknown layout,
            of the other architecture than asked, or does not fit strictly.
    """
    p, resolved, raw = read_weights(path, architecture)
    if is_ensemble(raw):
        raise ModelLoadError(f"{p}: an averaged ensemble (listener ensemble); this needs one "
                             f"network: give one of the files it was built from")
    named_by = Path(path) / CONFIG_NAME if architecture == "auto" and p != Path(path) else None
    model, layout = fit_network(raw, resolved, str(p), named_by)
    return model, checkpoint_info(p, layout, model)


def read_weights(path: str | Path, architecture: str) -> tuple[Path, str, dict[str, Tensor]]:
    """The weights file (a snapshot folder resolved), the architecture asked and its
    tensors (``ModelLoadError``: an unknown architecture, or a file that does not read)."""
    p, architecture = resolve_weights(Path(path), architecture)
    if architecture not in ("auto", *ARCHITECTURES):
        raise ModelLoadError(f"{p}: unknown architecture {architecture!r}; expected auto, "
                             f"{', '.join(ARCHITECTURES)}")
    return p, architecture, load_state_dict_file(p)


def checkpoint_info(p: Path, layout: str, model: nn.Module) -> CheckpointInfo:
    """What was loaded from ``p`` (hashes the file), logged once."""
    info = CheckpointInfo(path=p, sha256=file_digest(p), layout=layout,
                          architecture=str(getattr(model, "architecture", "unknown")),
                          parameter_count=parameter_count(model))
    log.info("loaded %s weights from %s (%s layout, %d parameters, sha256 %s)",
             describe(model), p, layout, info.parameter_count, info.sha256[:12])
    return info
