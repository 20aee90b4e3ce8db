"""The clip sink's audio and spectrogram files, and the OrcaHello records naming them."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from support.sink_events import STATION, make_event

from listener.audio.history import AudioHistory
from listener.config import ClipSinkConfig, OrcaHelloSinkConfig, OutputsConfig
from listener.events.axes import margins
from listener.events.png import PNG_SIGNATURE, write_png
from listener.events.records import clip_file_names
from listener.events.sinks import ClipSink, build_sinks, emit_all
from listener.events.sinks.clips import spectrogram_image

# --- clips ---------------------------------------------------------------------

def read_png(path: Path) -> tuple[int, int, np.ndarray]:
    """Decode our own 8-bit RGB, filter-0 PNG: ``(width, height, pixels)``."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pos = 8
    chunks: dict[bytes, bytes] = {}
    order: list[bytes] = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        order.append(kind)
        pos += 12 + length
    assert order[0] == b"IHDR" and order[-1] == b"IEND"
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, colour) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()
    return width, height, rows[:, 1:].reshape(height, width, 3)


def test_clip_sink_writes_flac_with_context_and_a_png(tmp_path: Path) -> None:
    sr = 8000
    history = AudioHistory(max_s=120)
    t = np.arange(100 * sr) / sr
    audio = (0.3 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)  # 1 kHz tone
    cfg = ClipSinkConfig(dir=tmp_path / "clips", format="flac", before_s=5, after_s=3)
    event = make_event(0, start_s=10.0)  # clip 10..70 s -> file 5..73 s
    written: list[int] = []

    async def main() -> None:
        for i in range(0, 71 * sr, sr):  # the "after" context is not there yet
            history.append(i / sr, audio[i:i + sr], sr, event.stream_key)
        sink = ClipSink(cfg, history, on_written=lambda: written.append(1))
        await sink.emit(event)
        await asyncio.sleep(0.01)
        assert written == []
        for i in range(71 * sr, 80 * sr, sr):
            history.append(i / sr, audio[i:i + sr], sr, event.stream_key)
        await sink.close(5.0)

    asyncio.run(main())
    assert written == [1]
    audio_name, image_name = clip_file_names(event, "flac")
    samples, rate = sf.read(tmp_path / "clips" / audio_name, dtype="float32")
    assert rate == sr and samples.shape == (68 * sr,)
    np.testing.assert_allclose(samples, audio[5 * sr:73 * sr], atol=1e-4)
    framed_width, framed_height, framed = read_png(tmp_path / "clips" / image_name)
    # The picture inside its time and frequency scales (tests/events/test_axes.py).
    top, left, bottom, right = margins(4)
    assert (framed_width, framed_height) == (framed.shape[1], framed.shape[0])
    pixels = framed[top:framed_height - bottom, left:framed_width - right]
    height, width = pixels.shape[:2]
    # 8 kHz: n_fft 1024 (one bin per row up to 4 kHz), hop 512 -> one column per frame.
    assert (width, height) == (1 + (68 * sr - 1024) // 512, 400)
    np.testing.assert_array_equal(pixels, spectrogram_image(audio[5 * sr:73 * sr], sr))
    # 0..4 kHz bottom to top: the 1 kHz tone is the brightest row, a quarter up.
    brightest = int(np.argmax(pixels.astype(int).sum(axis=(1, 2))))
    assert abs(brightest - 300) <= 2
    assert tuple(pixels[0, 0]) == (68, 1, 84)  # quiet top row: the colormap's dark end
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == sorted(
        [audio_name, image_name])  # no temporary files left


def _record_and_its_files(tmp_path: Path, history_from_s: float,
                          caplog: pytest.LogCaptureFixture) -> tuple[dict[str, Any], np.ndarray,
                                                                      int, Path]:
    """Clip 60..120 s with a tone at clip seconds 11..14, through the sinks
    ``build_sinks`` makes for ``orcahello`` + ``clips`` (default 10 s context),
    the history holding audio from ``history_from_s``: the record, the audio
    it names, its rate and the image it names."""
    sr = 8000
    audio = np.zeros(200 * sr, dtype=np.float32)
    t = np.arange(3 * sr) / sr
    audio[71 * sr:74 * sr] = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    event = make_event(0, start_s=60.0)  # seconds 11..13 positive
    history = AudioHistory(max_s=300)
    first = int(history_from_s * sr)
    history.append(history_from_s, audio[first:], sr, event.stream_key)
    outputs = OutputsConfig(orcahello=OrcaHelloSinkConfig(dir=tmp_path / "oh"),
                            clips=ClipSinkConfig(dir=tmp_path / "clips", format="wav"), log=False)

    async def main() -> None:
        sinks = build_sinks(outputs, STATION, history)
        await emit_all(sinks, event)
        for sink in sinks:
            await sink.close(10.0)

    with caplog.at_level(logging.INFO, logger="listener.events.sinks.clips"):
        asyncio.run(main())
    record = json.loads((tmp_path / "oh" / f"{event.id}.json").read_text())
    samples, rate = sf.read(tmp_path / "clips" / record["audioUri"], dtype="float32")
    return record, samples, rate, tmp_path / "clips" / record["imageUri"]


@pytest.mark.parametrize("history_from_s", [0.0, 65.0])
def test_orcahello_record_predictions_fall_where_its_audio_has_the_call(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, history_from_s: float) -> None:
    record, samples, sr, image = _record_and_its_files(tmp_path, history_from_s, caplog)
    # The portal plays startTime s into audioUri and marks startTime / 61 of imageUri.
    assert samples.shape == (60 * sr,)  # time 0 = clip start, spanning the clip
    loud = np.flatnonzero(np.abs(samples) > 0.1)
    assert record["predictions"][0]["startTime"] == 11.0
    assert abs(loud[0] / sr - 11.0) < 0.01 and abs(loud[-1] / sr - 14.0) < 0.01
    width, _, _ = read_png(image)
    _, left, _, right = margins(4)
    assert width - left - right == 1 + (60 * sr - 1024) // 512  # the picture spans the clip
    assert (tmp_path / "clips" / clip_file_names(
        make_event(0, start_s=60.0), "wav")[0]).exists()  # the file with context as before
    filled = [r.getMessage() for r in caplog.records if "filled with silence" in r.getMessage()]
    if history_from_s > 60.0:  # the history lacks the clip's first 5 s: silence, logged
        assert not samples[:5 * sr].any() and len(filled) == 1 and "5.00 s" in filled[0]
    else:
        assert filled == []


def test_clip_sink_without_audio_counts_a_failure(tmp_path: Path) -> None:
    failures: list[int] = []
    cfg = ClipSinkConfig(dir=tmp_path / "clips", before_s=0, after_s=0)

    async def main() -> None:
        sink = ClipSink(cfg, AudioHistory(10), on_failure=lambda: failures.append(1),
                        wait_extra_s=0.05)
        await sink.emit(make_event())
        await sink.close(2.0)

    asyncio.run(main())
    assert failures == [1] and not (tmp_path / "clips").exists()


# --- png -----------------------------------------------------------------------

def test_png_round_trip_and_spectrogram_size_bounds(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(3, 5, 3), dtype=np.uint8)
    write_png(tmp_path / "x.png", rgb)
    width, height, pixels = read_png(tmp_path / "x.png")
    assert (width, height) == (5, 3)
    np.testing.assert_array_equal(pixels, rgb)
    long_48k = rng.standard_normal(80 * 48000).astype(np.float32)
    assert spectrogram_image(long_48k, 48000).shape == (400, 1200, 3)
    assert spectrogram_image(np.zeros(10, np.float32), 48000).max() <= 84  # silence: dark
