"""What a model learnt from, carried in its weights, so validation never grades it on those files.

``listener train`` writes into the safetensors metadata the content digests
of every file the model trained on, its starting model's included
(``trained_on``), and whether that list is whole (``trained_on_complete``:
``false`` once any model of the chain did not record its files). A fine-tune
keeps the files its starting model learnt from out of validation: scored on
them, the starting weights look better than they are, and so does every
epoch that remembers them. (The demo models of commits 7fd7a17 to a0716f2
were graded that way: 32 of their 67 held-out files had trained 7fd7a17.)

Digests are of the file's bytes, so a renamed or moved copy is still known.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from listener.digests import file_digest
from listener.errors import ListenerError
from listener.model.metadata import safetensors_metadata

DIGEST_CHARS = 16  # 64 bits of sha1: no accidental collision among a project's files
MAX_FILES = 200_000  # an untrusted header gets a bounded parse
_DIGEST = re.compile(rf"^[0-9a-f]{{{DIGEST_CHARS}}}$")


@lru_cache(maxsize=65_536)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(Path(path), "sha1")[:DIGEST_CHARS]


def digest(path: Path) -> str:
    """The content digest of ``path`` (remembered while the file is unchanged)."""
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class Lineage:
    """The digests of the files a model trained on; ``complete`` when none is missing."""

    digests: frozenset[str] = frozenset()
    complete: bool = True

    def joined(self, paths: list[Path]) -> Lineage:
        """This lineage and the files of one more run."""
        return Lineage(self.digests | {digest(p) for p in paths}, self.complete)

    def to_metadata(self) -> dict[str, str]:
        return {"trained_on": ",".join(sorted(self.digests)),
                "trained_on_complete": "true" if self.complete else "false"}


def read_lineage(weights: str | Path) -> Lineage:
    """The lineage ``weights`` records; an empty, incomplete one when it records none.

    Raises:
        ListenerError: the metadata is there but malformed (names the file and key).
    """
    meta = safetensors_metadata(weights)
    if "trained_on" not in meta:
        return Lineage(frozenset(), complete=False)
    text = meta["trained_on"]
    items = [d for d in text.split(",") if d] if text else []
    bad = next((d for d in items if not _DIGEST.match(d)), None)
    if len(items) > MAX_FILES or bad is not None:
        what = f"over {MAX_FILES} entries" if bad is None else f"entry {bad[:40]!r}"
        raise ListenerError(f"{weights}: metadata trained_on: {what} is not a list of "
                            f"{DIGEST_CHARS}-digit hex digests; re-save the weights or drop "
                            "the key")
    return Lineage(frozenset(items), meta.get("trained_on_complete") == "true")


def lineage_of(weights: Sequence[str | Path]) -> Lineage:
    """What any of ``weights`` learnt from: the union of their lineages, complete when
    each is (empty and complete for no weights)."""
    parts = [read_lineage(w) for w in weights]
    return Lineage(frozenset().union(*(x.digests for x in parts)),
                   all(x.complete for x in parts))
