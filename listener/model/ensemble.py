"""Averaged ensembles: several networks in one file, scoring the mean of their probabilities.

``listener ensemble A B --out C`` writes the members' tensors under
``members.<i>.`` (our layout) into one safetensors file, so an ensemble is
one model everywhere a model is named: one path in ``models:``, one SHA-256
in events, one lineage (the union of the members' ``trained_on``: a file any
member learnt from is never validation for the ensemble). :func:`load_network`
reads either kind of file; training and background screening keep
:func:`~listener.model.checkpoints.load_model`, which takes one network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import save_file
from torch import Tensor

from listener.atomic import atomic_write
from listener.config.models import require_model_id
from listener.digests import file_digest
from listener.errors import ModelLoadError
from listener.model.checkpoints import (
    CheckpointInfo,
    checkpoint_info,
    fit_network,
    read_weights,
    to_listener_layout,
)
from listener.model.lineage import lineage_of
from listener.model.network import MEMBERS_PREFIX, AveragedEnsemble, OrcaResNet, is_ensemble
from listener.numerals import ascii_int

log = logging.getLogger(__name__)

#: More members cost more compute than any gain they bring; also bounds an untrusted file.
MAX_MEMBERS = 8


def split_members(sd: Mapping[str, Tensor], source: str) -> list[dict[str, Tensor]] | None:
    """An ensemble's member state dicts in order, or ``None`` for a single network.

    Raises:
        ModelLoadError: naming ``source``: names outside ``members.<i>.``,
            fewer than two or more than :data:`MAX_MEMBERS` members, or a gap
            in their numbers.
    """
    if not is_ensemble(sd):
        return None
    groups: dict[int, dict[str, Tensor]] = {}
    for key, value in sd.items():
        index, _, rest = key.removeprefix(MEMBERS_PREFIX).partition(".")
        # One spelling per member: "01" beside "1" would let one overwrite the other.
        number = ascii_int(index, max_digits=2)
        if not key.startswith(MEMBERS_PREFIX) or number is None or not rest \
                or index != str(number):
            raise ModelLoadError(f"{source}: an averaged ensemble holds only "
                                 f"'{MEMBERS_PREFIX}<i>.<name>' tensors; found {key[:80]!r}")
        groups.setdefault(number, {})[rest] = value
    if not 2 <= len(groups) <= MAX_MEMBERS or sorted(groups) != list(range(len(groups))):
        raise ModelLoadError(f"{source}: an averaged ensemble needs members numbered 0..n-1, "
                             f"2 <= n <= {MAX_MEMBERS}; found {sorted(groups)[:MAX_MEMBERS + 1]}")
    return [groups[i] for i in range(len(groups))]


def load_network(path: str | Path, architecture: str = "auto"
                 ) -> tuple[OrcaResNet | AveragedEnsemble, CheckpointInfo]:
    """Read a weights file holding one network or an averaged ensemble, loaded strictly.

    Args:
        path: as for :func:`~listener.model.checkpoints.load_model`.
        architecture: ``"auto"`` or the architecture every member must have.

    Returns:
        The model in eval mode on the CPU, and what was loaded (an
        ensemble's layout is ``"listener"``: its members are written in ours).

    Raises:
        ModelLoadError: as ``load_model``; for an ensemble, naming the member.
    """
    p, architecture, raw = read_weights(path, architecture)
    states = split_members(raw, str(p))
    if states is None:
        model, layout = fit_network(raw, architecture, str(p))
        return model, checkpoint_info(p, layout, model)
    members = [fit_network(sd, architecture, f"{p} member {i}")[0]
               for i, sd in enumerate(states)]
    try:
        ensemble = AveragedEnsemble(members).eval()
    except ValueError as err:
        raise ModelLoadError(f"{p}: {err}") from err
    return ensemble, checkpoint_info(p, "listener", ensemble)


@dataclass(frozen=True)
class EnsembleSummary:
    """What ``listener ensemble`` wrote."""

    path: Path
    architecture: str
    members: tuple[Path, ...]
    band_norm: tuple[bool, ...]
    parameter_count: int
    sha256: str


def write_ensemble(members: Sequence[str | Path], out: str | Path,
                   model_id: str | None = None) -> EnsembleSummary:
    """Write an averaged ensemble of ``members`` (each one network, any layout) to ``out``.

    Each member's tensors keep the number format of its file (a float16 file
    stays float16), renamed to our layout. The metadata records each
    member's file name and SHA-256 and the union of their lineages; the file
    is written atomically and read back strictly.

    Raises:
        ModelLoadError: a member that does not load or is itself an ensemble,
            members of different architectures, fewer than two or more than
            :data:`MAX_MEMBERS`.
    """
    out = Path(out)
    if model_id is not None:
        require_model_id(model_id)
    if not 2 <= len(members) <= MAX_MEMBERS:
        raise ModelLoadError(f"an averaged ensemble needs 2 to {MAX_MEMBERS} networks; "
                             f"got {len(members)}")
    nets, tensors, listed = [], {}, []
    for i, member in enumerate(members):
        p, _, raw = read_weights(member, "auto")
        if split_members(raw, str(p)) is not None:
            raise ModelLoadError(f"{p}: is itself an averaged ensemble; list its members instead")
        net, layout = fit_network(raw, "auto", str(p))
        nets.append(net)
        tensors.update({f"{MEMBERS_PREFIX}{i}.{k}": v.contiguous()
                        for k, v in to_listener_layout(raw, layout).items()})
        listed.append((p, file_digest(p)))
    try:
        arch = AveragedEnsemble(nets).architecture
    except ValueError as err:
        names = ", ".join(f"{p} ({n.architecture})" for (p, _), n in zip(listed, nets, strict=True))
        raise ModelLoadError(f"{names}: {err}") from err
    meta = {"format": "listener", "architecture": arch, "model_id": model_id or out.stem,
            "trained_by": "listener ensemble",
            "ensemble_of": json.dumps([{"file": p.name, "sha256": d} for p, d in listed]),
            **lineage_of([p for p, _ in listed]).to_metadata()}
    atomic_write(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta))
    _, info = load_network(out)  # proves the file loads, as the daemon will load it
    log.info("wrote an averaged ensemble of %d %s networks to %s", len(nets), arch, out)
    return EnsembleSummary(out, arch, tuple(p for p, _ in listed),
                           tuple(n.band_norm for n in nets), info.parameter_count, info.sha256)

