"""Is a weights file a checkpoint we can load? Answered from its names, without building a network.

``listener check-config`` and the start-up checks call :func:`inspect_checkpoint`
so that ``/dev/zero``, an empty or text file, a missing path or a state dict
of another network is refused before the model loads, naming the key. Only
the header (safetensors) or the pickled structure with memory-mapped storages
(torch zip files) is read: seconds for a 100 MB file become milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from torch import Tensor

from listener.errors import ModelLoadError
from listener.model.checkpoints import (
    _TORCH_SUFFIXES,
    detect_layout,
    infer_architecture,
    load_state_dict_file,
    load_torch_tensors,
)
from listener.model.ensemble import split_members
from listener.model.network import BAND_NORM_KEY
from listener.model.snapshot import resolve_weights


@dataclass(frozen=True)
class CheckpointSummary:
    """What a weights file holds: its file, layout, architecture, whether its
    network is band-normalised and how many networks it holds (an averaged
    ensemble's members; ``band_norm`` is then whether every member is)."""

    path: Path
    layout: str
    architecture: str
    band_norm: bool = False
    members: int = 1


def inspect_checkpoint(path: str | Path, architecture: str = "auto") -> CheckpointSummary:
    """The layout and architecture of a weights file or hub snapshot folder.

    Raises:
        ModelLoadError: missing, not a regular file, unreadable, not a state
            dict, of an unknown layout, or of another architecture than
            ``architecture`` (the messages :func:`~listener.model.ensemble.load_network`
            gives for the same files).
    """
    p, architecture = resolve_weights(Path(path), architecture)
    names = _names(p)
    groups = split_members(cast(dict[str, Tensor], dict.fromkeys(names)), str(p))
    members = [list(g) for g in groups] if groups is not None else [names]
    found = [_network_of(m, p if groups is None else f"{p} member {i}")
             for i, m in enumerate(members)]
    archs = sorted({arch for _, arch in found})
    if len(archs) > 1:
        raise ModelLoadError(f"{p}: an averaged ensemble needs members of one architecture; "
                             f"found {', '.join(archs)}")
    if architecture not in ("auto", archs[0]):
        raise ModelLoadError(f"{p}: model.architecture is {architecture} but the file holds "
                             f"{archs[0]} weights (set architecture: auto or {archs[0]})")
    return CheckpointSummary(p, found[0][0] if groups is None else "listener", archs[0],
                             all(BAND_NORM_KEY in m for m in members), len(members))


def _network_of(names: list[str], source: str | Path) -> tuple[str, str]:
    """The layout and architecture of one network's tensor names."""
    try:
        return (detect_layout(names),
                infer_architecture(cast(dict[str, Tensor], dict.fromkeys(names))))
    except ModelLoadError as err:
        raise ModelLoadError(f"{source}: {err}") from err


def _names(p: Path) -> list[str]:
    """The tensor names of a weights file, reading as little of it as it allows."""
    suffix = p.suffix.lower()
    if not p.is_file() or suffix == ".pkl" or (
            suffix != ".safetensors" and suffix not in _TORCH_SUFFIXES):
        load_state_dict_file(p)  # raises the loader's own message for these
    if suffix == ".safetensors":
        try:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:  # the header only
                names = list(f.keys())
        except Exception as err:  # safetensors raises its own error types and OSError
            raise ModelLoadError(f"{p}: cannot read safetensors file: {err}") from err
        if not names:
            raise ModelLoadError(f"{p}: the state dict is empty")
        return names
    return list(load_torch_tensors(p, mmap=True))
