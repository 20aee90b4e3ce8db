"""A minimal PNG encoder (8-bit RGB), so spectrogram pictures need no imaging library.

The format: the 8-byte signature, then chunks ``length | type | data | crc32``:
``IHDR`` (width, height, bit depth 8, colour type 2 = RGB, deflate, no
interlace), one ``IDAT`` holding the zlib-compressed scanlines (each row
prefixed with filter type 0, "none"), and ``IEND``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def encode_png(rgb: np.ndarray, level: int = 6) -> bytes:
    """The PNG bytes of an ``(H, W, 3)`` uint8 image (row 0 is the top)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1x1, got {width}x{height}")
    rows = np.empty((height, 1 + 3 * width), dtype=np.uint8)
    rows[:, 0] = 0  # filter "none": photos would gain from "sub"/"paeth", spectrograms little
    rows[:, 1:] = np.ascontiguousarray(rgb).reshape(height, 3 * width)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (PNG_SIGNATURE + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(rows.tobytes(), level)) + _chunk(b"IEND", b""))


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an ``(H, W, 3)`` uint8 image to ``path`` as PNG. Raises ``OSError``."""
    data = encode_png(rgb)
    with open(path, "wb") as fh:
        fh.write(data)
