"""Hard caps on what an untrusted weights file may make us read or allocate.

One place for both readers of untrusted archives: the checkpoint loader
(sizes of a torch zip's members) and ``convert-fastai`` (its unpickler).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """Hard caps on what an untrusted file may make us read or allocate (bytes)."""

    max_file_bytes: int = 4 << 30
    max_pickle_bytes: int = 64 << 20
    max_storage_bytes: int = 1 << 30
    max_total_storage_bytes: int = 2 << 30
    max_members: int = 10_000
