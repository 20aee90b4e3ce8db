"""What a safetensors file's header declares: its string metadata (model id,
recipe, lineage) and its tensor names.

Only the header is read, and the format bounds it (100 MB at most), so an
untrusted file cannot make this read without end.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def safetensors_header(path: str | Path) -> tuple[dict[str, str], list[str]]:
    """``(metadata, tensor names)``; both empty for other formats and unreadable files.

    A file that cannot be read declares nothing here: the loader, not this
    probe, reports what is wrong with it.
    """
    p = Path(path)
    if p.suffix.lower() != ".safetensors" or not p.is_file():
        return {}, []
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {}), list(f.keys())
    except Exception as err:  # safetensors raises its own error types and OSError
        log.debug("no header read from %s: %s", p, err)
        return {}, []


def safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The header's ``__metadata__``; empty for other formats and for files that do not read."""
    return safetensors_header(path)[0]
