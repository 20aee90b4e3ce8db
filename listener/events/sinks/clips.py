"""The audio of each detection, with context, and a spectrogram picture of it.

For a detection event the sink cuts ``[clip start - before_s, clip end +
after_s]`` out of the :class:`~listener.audio.history.AudioHistory` (mono, native
rate) and writes ``<dir>/<stem>.flac`` (or ``.wav``, 16-bit PCM) and
``<dir>/<stem>.png``; ``<stem>`` comes from
:func:`~listener.events.records.clip_file_names`, so other records can name the files
before they exist. When the OrcaHello record sink is configured (``clip_only``),
it also writes ``<stem>.clip.flac``/``.png``: exactly ``[clip start, clip
end]``, the pair the OrcaHello record links to, so time 0 of that audio is the
clip start its ``predictions`` count from (silence fills what the history
lacks, and is logged). The "after" context is still in the future when the event
is emitted, so ``emit`` only schedules the work and returns; the write waits
at most ``after_s + 30`` s for the audio, then writes what the history holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from listener.atomic import atomic_write
from listener.audio.history import AudioHistory
from listener.config import ClipSinkConfig
from listener.errors import SinkError
from listener.events.axes import add_axes
from listener.events.png import encode_png
from listener.events.records import Event, clip_file_names

logger = logging.getLogger(__name__)

# A viridis-like ramp (dark blue -> green -> yellow): perceptually ordered, so
# loudness reads the same across the picture, and legible to colour-blind eyes.
_ANCHORS = np.array([
    (68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142),
    (31, 158, 137), (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37),
], dtype=np.float64)


def colormap_lut(anchors: np.ndarray = _ANCHORS) -> np.ndarray:
    """A ``(256, 3)`` uint8 lookup table interpolated linearly between ``anchors``."""
    x = np.linspace(0.0, 1.0, len(anchors))
    t = np.linspace(0.0, 1.0, 256)
    lut = np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=1)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def spectrogram_image(samples: np.ndarray, sample_rate: int, *, max_width: int = 1200,
                      height: int = 400, f_max_hz: float = 10_000.0,
                      dynamic_range_db: float = 80.0) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 picture of the power spectrogram of ``(n,)`` samples.

    Frequencies 0..``min(f_max_hz, sample_rate/2)`` (OrcaHello's 10 kHz band by
    default) run bottom to top over ``height`` rows; time runs left to right
    over at most ``max_width`` columns, each the mean power of the STFT frames
    it covers (Hann window, 50 % overlap). Colour spans the loudest
    ``dynamic_range_db`` of the picture.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    f_max = min(f_max_hz, sample_rate / 2)
    # FFT size: the smallest power of two giving at least one bin per row.
    n_fft = 256
    while n_fft * f_max / sample_rate < height and n_fft < 65536:
        n_fft *= 2
    if x.size < n_fft:
        x = np.pad(x, (0, n_fft - x.size))
    hop = n_fft // 2
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop]
    n_frames = frames.shape[0]
    width = min(max_width, n_frames)
    n_bins = max(1, min(n_fft // 2 + 1, int(f_max * n_fft / sample_rate) + 1))
    rows = min(height, n_bins)
    window = np.hanning(n_fft).astype(np.float32)
    col_edges = np.linspace(0, n_frames, width + 1).astype(np.int64)
    power = np.empty((width, n_bins), dtype=np.float64)
    # Columns in blocks of ~2048 frames: bounded memory for long clips at 48 kHz.
    step = max(1, (2048 * width) // n_frames)
    for c0 in range(0, width, step):
        c1 = min(width, c0 + step)
        f0, f1 = col_edges[c0], col_edges[c1]
        spec = np.abs(np.fft.rfft(frames[f0:f1] * window, axis=1)[:, :n_bins]) ** 2
        sums = np.add.reduceat(spec, col_edges[c0:c1] - f0, axis=0)
        power[c0:c1] = sums / np.diff(col_edges[c0:c1 + 1])[:, None]
    row_edges = np.linspace(0, n_bins, rows + 1).astype(np.int64)[:-1]
    power = np.add.reduceat(power, row_edges, axis=1) / np.diff(
        np.append(row_edges, n_bins))[None, :]
    db = 10.0 * np.log10(np.maximum(power, 1e-12))
    top = float(db.max())
    if top <= -119.0:  # digital silence: a dark picture rather than a saturated one
        level = np.zeros_like(db)
    else:
        level = np.clip((db - (top - dynamic_range_db)) / dynamic_range_db, 0.0, 1.0)
    index = np.rint(level * 255).astype(np.uint8)
    # (time, freq) -> (freq, time), highest frequency in row 0 (the top).
    return colormap_lut()[index.T[::-1]]


def cut_clip(samples: np.ndarray, start_s: float, sample_rate: int, clip_start_s: float,
             clip_end_s: float) -> tuple[np.ndarray, int, int]:
    """``[clip_start_s, clip_end_s)`` of ``(n,)`` samples that begin at ``start_s``.

    Returns ``(clip, head, tail)``: what the samples lack at either end is
    filled with ``head``/``tail`` samples of digital silence, so sample 0 is
    always ``clip_start_s`` and the length always the clip's.
    """
    n = round((clip_end_s - clip_start_s) * sample_rate)
    first = round((clip_start_s - start_s) * sample_rate)
    head = min(n, max(0, -first))
    body = samples[max(0, first):max(0, first) + n - head]
    tail = n - head - body.size
    out = np.zeros(n, dtype=np.float32)
    out[head:head + body.size] = body
    return out, head, tail


def clip_picture(samples: np.ndarray, sample_rate: int, **kwargs: Any) -> np.ndarray:
    """:func:`spectrogram_image` with a time (s) and frequency (kHz) scale around it."""
    f_max = min(float(kwargs.get("f_max_hz", 10_000.0)), sample_rate / 2)
    return add_axes(spectrogram_image(samples, sample_rate, **kwargs),
                    seconds=samples.size / sample_rate, f_max_hz=f_max)


class ClipSink:
    """Writes the audio and spectrogram of each detection event.

    Args:
        cfg: the ``outputs.clips`` section.
        history: the station's audio history (same stream offsets as the clips).
        on_written / on_failure: called per clip written / failed.
        max_pending: clips waiting for their "after" audio at most; more is an error.
        wait_extra_s: how much longer than ``after_s`` to wait for the audio.
        clip_only: also write the clip-only pair (the OrcaHello record sink needs it).
    """

    reports_own_deliveries = True
    durable = False

    def __init__(self, cfg: ClipSinkConfig, history: AudioHistory, *,
                 on_written: Callable[[], None] | None = None,
                 on_failure: Callable[[], None] | None = None,
                 max_pending: int = 16, wait_extra_s: float = 30.0,
                 clip_only: bool = False) -> None:
        self.name = "clips"
        self.cfg = cfg
        self.dir = Path(cfg.dir)
        self.history = history
        self._on_written = on_written
        self._on_failure = on_failure
        self.max_pending = max_pending
        self.wait_extra_s = wait_extra_s
        self.clip_only = clip_only
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Nothing to do: the folder is created on the first write."""

    async def emit(self, event: Event) -> None:
        """Schedule the clip of a detection event; raises :class:`SinkError` when full."""
        if event.kind != "detection" or event.clip is None:
            return
        if len(self._tasks) >= self.max_pending:
            raise SinkError(f"clips: {len(self._tasks)} clips already waiting for audio; "
                            f"dropping the clip of event {event.id}")
        task = asyncio.create_task(self._background(event), name=f"clip-{event.id[:8]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _background(self, event: Event) -> None:
        try:
            audio, image = await self.write_clip(event)
        except SinkError as err:
            logger.warning("%s", err)
            if self._on_failure is not None:
                self._on_failure()
        except Exception:
            logger.exception("clips: writing the clip of event %s failed", event.id)
            if self._on_failure is not None:
                self._on_failure()
        else:
            logger.debug("clips: wrote %s and %s", audio, image)
            if self._on_written is not None:
                self._on_written()

    async def write_clip(self, event: Event) -> tuple[Path, Path]:
        """Wait for the audio, write the files; returns the pair with context.

        Raises :class:`SinkError`.
        """
        clip = event.clip
        if clip is None:
            raise SinkError(f"clips: event {event.id} ({event.kind}) has no clip")
        start, end = clip.start_s - self.cfg.before_s, clip.end_s + self.cfg.after_s
        arrived = await self.history.wait_until(end, self.cfg.after_s + self.wait_extra_s,
                                                event.stream_key)
        got = self.history.get_with_rate(start, end, event.stream_key)
        if got is None:
            raise SinkError(f"clips: no audio held for {start:.1f}..{end:.1f} s of "
                            f"{event.stream_key} (event {event.id}); nothing written")
        samples, actual_start, sample_rate = got
        actual_end = actual_start + samples.size / sample_rate
        if not arrived or actual_start > start + 1e-3:
            logger.info("clips: event %s: only %.1f..%.1f s of %.1f..%.1f s held; writing that",
                        event.id, actual_start, actual_end, start, end)
        paths = await self._write_pair(event, samples, sample_rate, clip_only=False)
        if self.clip_only:
            cut, head, tail = cut_clip(samples, actual_start, sample_rate,
                                       clip.start_s, clip.end_s)
            if head or tail:
                logger.info("clips: event %s: the clip-only file lacks %.2f s at its start "
                            "and %.2f s at its end; filled with silence", event.id,
                            head / sample_rate, tail / sample_rate)
            await self._write_pair(event, cut, sample_rate, clip_only=True)
        return paths

    async def _write_pair(self, event: Event, samples: np.ndarray, sample_rate: int, *,
                          clip_only: bool) -> tuple[Path, Path]:
        audio_name, image_name = clip_file_names(event, self.cfg.format, clip_only=clip_only)
        paths = (self.dir / audio_name, self.dir / image_name)
        try:
            await asyncio.to_thread(self._write_files, samples, sample_rate, *paths)
        except (OSError, RuntimeError, ValueError) as err:
            # soundfile reports its errors as RuntimeError (LibsndfileError).
            raise SinkError(f"clips: cannot write {paths[0]} / {paths[1]}: {err}") from err
        return paths

    def _write_files(self, samples: np.ndarray, sample_rate: int, audio: Path,
                     image: Path) -> None:
        fmt = self.cfg.format.upper()

        def write_audio(tmp: Path) -> None:
            sf.write(tmp, samples, sample_rate, format=fmt, subtype="PCM_16")

        atomic_write(audio, write_audio)
        atomic_write(image, encode_png(clip_picture(samples, sample_rate)))

    async def close(self, timeout_s: float) -> None:
        """Let pending clips finish for up to ``timeout_s``; cancel the rest."""
        tasks = set(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout_s)
        if pending:
            logger.warning("clips: %d clip(s) not written before shutdown", len(pending))
            for task in pending:
                task.cancel("clip sink closing")
            await asyncio.gather(*pending, return_exceptions=True)
