"""deploy/kubernetes's kustomizations and lookups in their rendered objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
ALL_DIRS = [K8S / "base", K8S / "shared", K8S / "monitoring", *OVERLAYS]

Obj = dict[str, Any]


def _id(path: Path) -> str:
    return path.relative_to(K8S).as_posix()


def one(objs: list[Obj], kind: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]
