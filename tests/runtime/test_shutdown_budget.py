"""The supervisor's stop budget covers every shutdown stage's timeout.

systemd SIGKILLs the daemon ``TimeoutStopSec`` after SIGTERM and Kubernetes
``terminationGracePeriodSeconds`` after it; either one landing in the middle
of the sinks' flush would lose events. Each value in ``deploy/`` must
exceed the sum of the stage timeouts with a margin for the signal itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support.kustomize import KUSTOMIZE_CMD, NO_KUSTOMIZE, render

from listener.runtime.daemon import Timeouts

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MARGIN_S = 2.0


def _systemd_budgets() -> list[tuple[str, float]]:
    out = []
    for unit in sorted(DEPLOY.rglob("*.service")):
        for m in re.finditer(r"^TimeoutStopSec=(\d+)s?$", unit.read_text(), re.M):
            out.append((str(unit.relative_to(ROOT)), float(m[1])))
    return out


WORKLOADS = ("Deployment", "StatefulSet", "Job")


def _kubernetes_budgets() -> list[tuple[str, float]]:
    """Each rendered workload's grace period (0 when it sets none: the default 30 s)."""
    if KUSTOMIZE_CMD is None:
        return []
    out = []
    for kustomization in sorted((DEPLOY / "kubernetes").rglob("kustomization.yaml")):
        if "kind: Component" in kustomization.read_text():
            continue
        for obj in render(kustomization.parent):
            if obj.get("kind") in WORKLOADS:
                spec = obj["spec"]["template"]["spec"]
                where = f"{kustomization.parent.relative_to(ROOT)} {obj['metadata']['name']}"
                out.append((where, float(spec.get("terminationGracePeriodSeconds", 0))))
    return out


def test_stage_timeouts_add_up() -> None:
    t = Timeouts()
    assert t.total_s >= t.drain_s + t.sinks_s + t.probes_s


@pytest.mark.parametrize(("where", "budget_s"), _systemd_budgets() + _kubernetes_budgets(),
                         ids=lambda v: str(v))
def test_supervisor_budget_covers_shutdown(where: str, budget_s: float) -> None:
    need = Timeouts().total_s + MARGIN_S
    assert budget_s >= need, (f"{where}: {budget_s:.0f} s is less than the daemon's shutdown "
                              f"budget of {need:.0f} s (stage timeouts + margin)")


def test_budgets_were_found() -> None:
    assert _systemd_budgets(), "no TimeoutStopSec in deploy/"
    if KUSTOMIZE_CMD is None:
        pytest.skip(NO_KUSTOMIZE)
    assert _kubernetes_budgets(), "no workload rendered from deploy/kubernetes"
