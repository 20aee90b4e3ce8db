"""Decoded, resampled training audio, cached on disk so an epoch costs only the network's time.

Each file is decoded once by content (ffmpeg: a ``.wav`` holding MP3 data
decodes as MP3) and resampled by the daemon's own
:meth:`~listener.model.frontend.Frontend.prepare`. Next to the clean version
the cache keeps a few *AAC round trips* of the file: resampled to 48 kHz,
encoded as AAC-LC (what an Orcasound node streams and ``listener demo``
encodes), decoded and resampled back. Encoding once per file and variant,
rather than every step, keeps the augmentation cheap; the variants differ in
bit rate and in where the encoder's frames fall.

Entries are float16 ``.npy`` files named by a hash of the file's bytes, the
rate and the variant, so a changed file or frontend gets new entries and the
cache never needs invalidating by hand.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from listener.atomic import atomic_write
from listener.audio.decode import FileDecoder, find_ffmpeg
from listener.digests import file_digest
from listener.errors import DecodeError
from listener.model import dsp

log = logging.getLogger(__name__)

AAC_RATE = 48_000
_VERSION = "1"


@dataclass(frozen=True)
class AacVariant:
    """One AAC round trip: bit rate and a leading pad (shifts the encoder's frame grid)."""

    bitrate: str
    pad: int

    @property
    def tag(self) -> str:
        return f"aac{self.bitrate}p{self.pad}"


# Orcasound nodes stream about 64-128 kb/s. Two variants (two rates, two frame
# grids) per file: each costs an encode of every training file on the first run.
DEFAULT_VARIANTS: tuple[AacVariant, ...] = (AacVariant("64k", 0), AacVariant("96k", 517))


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "listener" / "train-audio"


def decode_file(path: Path, rate: int) -> np.ndarray:
    """A whole file -> mono float32 at ``rate`` (the frontend's downmix and resampler)."""
    decoder = FileDecoder(path)
    blocks = list(decoder)
    if not blocks:
        return np.zeros(0, dtype=np.float32)
    return dsp.resample(dsp.downmix(np.concatenate(blocks, axis=1)), decoder.sample_rate, rate)


def aac_round_trip(wave: np.ndarray, rate: int, variant: AacVariant) -> np.ndarray:
    """``wave`` (mono, ``rate``) through 48 kHz AAC-LC and back, same length and alignment."""
    up = dsp.resample(wave, rate, AAC_RATE)
    up = np.concatenate([np.zeros(variant.pad, np.float32), up]).astype("<f4")
    ffmpeg = find_ffmpeg()
    with tempfile.TemporaryDirectory(prefix="listener-aac-") as tmp:
        raw, enc = Path(tmp) / "in.f32", Path(tmp) / "out.m4a"
        raw.write_bytes(up.tobytes())
        # m4a keeps the encoder delay in its edit list, so the decoded audio
        # lines up with the input (ADTS would prepend 1024 priming samples).
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "f32le",
               "-ar", str(AAC_RATE), "-ac", "1", "-i", str(raw), "-c:a", "aac",
               "-b:a", variant.bitrate, "-y", str(enc)]
        done = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
        if done.returncode != 0:
            raise DecodeError("AAC round trip", "ffmpeg could not encode AAC",
                              done.stderr.decode(errors="replace")[-300:])
        out = decode_file(enc, rate)
    start = round(variant.pad * rate / AAC_RATE)
    out = out[start:start + wave.size]
    return np.pad(out, (0, wave.size - out.size)).astype(np.float32)


class AudioCache:
    """Clean and AAC-round-tripped versions of files, at one sample rate, on disk.

    Args:
        root: the cache folder (created on first write); ``None`` keeps nothing on disk.
        rate: the frontend's sample rate.
        variants: the AAC round trips to keep per file (empty: none).
    """

    def __init__(self, root: Path | None, rate: int,
                 variants: tuple[AacVariant, ...] = DEFAULT_VARIANTS) -> None:
        self.root = root
        self.rate = rate
        self.variants = variants
        self.hits = 0
        self.misses = 0

    def _entry(self, digest: str, tag: str) -> Path | None:
        if self.root is None:
            return None
        key = hashlib.sha1(f"{_VERSION}:{digest}:{self.rate}:{tag}".encode()).hexdigest()
        return self.root / key[:2] / f"{key}.npy"

    def _get(self, entry: Path | None) -> np.ndarray | None:
        if entry is None or not entry.is_file():
            return None
        try:
            arr = np.load(entry, allow_pickle=False)
        except (OSError, ValueError):
            log.warning("unreadable cache entry %s: recomputing it", entry)
            return None
        self.hits += 1
        return arr

    def _put(self, entry: Path | None, wave: np.ndarray) -> np.ndarray:
        half = wave.astype(np.float16)
        self.misses += 1
        if entry is not None:
            entry.parent.mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            np.save(buf, half, allow_pickle=False)
            atomic_write(entry, buf.getvalue())
        return half

    def load(self, path: Path) -> tuple[np.ndarray, list[np.ndarray]]:
        """``(clean, [aac variants])`` as float16 arrays of equal length at ``rate``."""
        digest = file_digest(path, "sha1")
        entry = self._entry(digest, "clean")
        clean = self._get(entry)
        if clean is None:
            clean = self._put(entry, decode_file(path, self.rate))
        out = []
        for variant in self.variants if clean.size else ():
            v_entry = self._entry(digest, variant.tag)
            arr = self._get(v_entry)
            if arr is None:
                arr = self._put(v_entry, aac_round_trip(clean.astype(np.float32), self.rate,
                                                        variant))
            out.append(arr)
        return clean, out
