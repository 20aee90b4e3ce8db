"""Rendering deploy/kubernetes with the real kustomize (``kubectl kustomize``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZE_CMD = (["kubectl", "kustomize"] if shutil.which("kubectl")
                 else ["kustomize", "build"] if shutil.which("kustomize") else None)
NO_KUSTOMIZE = "neither kubectl nor kustomize installed"


def render(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR`` as objects; warnings (deprecations) fail the caller."""
    assert KUSTOMIZE_CMD is not None, NO_KUSTOMIZE
    result = subprocess.run([*KUSTOMIZE_CMD, str(directory)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "deprecated" not in result.stderr.lower(), result.stderr
    return [o for o in yaml.safe_load_all(result.stdout) if o]
