"""Real ffmpeg decoding real files and real Orcasound MPEG-TS/AAC segments."""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import numpy as np
import pytest

from listener.audio.decode import FileDecoder, StreamDecoder, find_ffmpeg, scan_wav_header
from listener.errors import DecodeError, FFmpegNotFoundError

DATA = Path(__file__).parents[1] / "data"
HLS = DATA / "hls" / "rpi_orcasound_lab" / "1594150218"
# EXTINF of the three real segments (ffmpeg's segment muxer: 459 + 469 + 469 AAC frames)
DURATIONS = [9.792, 10.005333, 10.005333]
AAC_FRAME = 1024


@pytest.mark.parametrize(("name", "rate", "channels"), [
    ("catalog/S01-JL_22050hz.wav", 22050, 1),
    ("catalog/S04-J-3_24576hz.wav", 24576, 1),
    ("catalog/S10-JKL-4_25057hz.wav", 25057, 1),
    ("catalog/S12-J-4_36000hz.wav", 36000, 1),
    ("catalog/S01-JL-1_44100hz.wav", 44100, 1),
    ("clips/orcasoundlab_1594154121.mp3", 48000, 2),
    ("hls/rpi_orcasound_lab/1594150218/live001.ts", 48000, 2),
    ("hls/rpi_orcasound_lab/1594150218/live000.ts", 48000, 1),
])
def test_file_decoder_native_rate_and_channels(name: str, rate: int, channels: int) -> None:
    dec = FileDecoder(DATA / name, block_s=0.5)
    blocks = list(dec)
    assert dec.sample_rate == rate and dec.channels == channels
    assert all(b.dtype == np.float32 and b.shape[0] == channels for b in blocks)
    assert sum(b.shape[1] for b in blocks) == dec.samples_read
    assert dec.duration_s > 1.0


def test_wav_file_decodes_bit_exact() -> None:
    import soundfile as sf

    path = DATA / "catalog" / "S12-J-4_36000hz.wav"
    ref, rate = sf.read(path, dtype="float32")
    got = np.concatenate(list(FileDecoder(path)), axis=1)[0]
    assert rate == 36000
    np.testing.assert_allclose(got, ref, atol=1e-7)


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio at all\n" * 100)
    with pytest.raises(DecodeError, match=r"notes\.txt") as info:
        list(FileDecoder(bad))
    assert "no audio stream" in str(info.value)
    noise = tmp_path / "noise.wav"
    noise.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(DecodeError, match=r"noise\.wav"):
        list(FileDecoder(noise))
    with pytest.raises(DecodeError, match="no such file"):
        list(FileDecoder(tmp_path / "missing.wav"))
    with pytest.raises(DecodeError, match="is a folder; give its audio files"):
        list(FileDecoder(tmp_path))


def test_truncated_segment_decodes_what_is_there(tmp_path: Path) -> None:
    data = (HLS / "live001.ts").read_bytes()
    cut = tmp_path / "cut.ts"
    cut.write_bytes(data[: len(data) // 2])
    dec = FileDecoder(cut)
    list(dec)
    assert 3.0 < dec.duration_s < 7.0


def test_ffmpeg_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LISTENER_FFMPEG", str(tmp_path / "nope"))
    with pytest.raises(FFmpegNotFoundError, match="nope"):
        find_ffmpeg()


def test_wav_header_scanner_rejects_garbage() -> None:
    assert scan_wav_header(b"", "x") == 12
    with pytest.raises(DecodeError):
        scan_wav_header(b"GARBAGEGARBAGE", "x")


async def _stream(segments: list[bytes], pause: float = 0.0) -> tuple[np.ndarray, int, list[int]]:
    dec = StreamDecoder("test-stream", anchor_s=0.0)
    await dec.start()
    blocks: list[np.ndarray] = []
    after_each: list[int] = []

    async def reader() -> None:
        while (b := await dec.read()) is not None:
            blocks.append(b)

    task = asyncio.create_task(reader())
    for seg in segments:
        await dec.feed(seg)
        if pause:
            await asyncio.sleep(pause)
            after_each.append(sum(b.shape[1] for b in blocks))
    await dec.close()
    await task
    return np.concatenate(blocks, axis=1), dec.sample_rate, after_each


def test_stream_decoder_is_gapless_and_accounts_for_every_sample() -> None:
    segs = [(HLS / f"live00{i}.ts").read_bytes() for i in range(3)]
    audio, rate, after_each = asyncio.run(_stream(segs, pause=0.5))
    assert rate == 48000 and audio.shape[0] == 1
    expected = round(sum(DURATIONS) * rate)
    assert abs(audio.shape[1] - expected) <= AAC_FRAME
    # each segment's audio comes out as soon as it is fed (no segment of latency)
    for i, got in enumerate(after_each):
        assert abs(got - round(sum(DURATIONS[: i + 1]) * rate)) <= AAC_FRAME


def test_stream_decoder_downmix_is_the_channel_mean() -> None:
    seg = (HLS / "live001.ts").read_bytes()
    stereo = np.concatenate(list(FileDecoder(HLS / "live001.ts")), axis=1)
    mono, _, _ = asyncio.run(_stream([seg]))
    n = min(mono.shape[1], stereo.shape[1])
    np.testing.assert_allclose(mono[0, :n], stereo.mean(axis=0)[:n], atol=1e-6)


def test_stream_decoder_reports_garbage_input() -> None:
    async def run() -> None:
        dec = StreamDecoder("garbage", 0.0)
        await dec.start()
        try:
            await dec.feed(b"\x00" * 100000)
        except DecodeError:
            pass
        await dec.close()
        await dec.read()

    with pytest.raises(DecodeError, match="garbage"):
        asyncio.run(run())


def test_wav_header_claiming_2_ghz_is_refused_before_allocating(tmp_path: Path) -> None:
    rate, channels, data = 2_000_000_000, 1, np.zeros(4000, "<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt \
        + b"data" + struct.pack("<I", len(data)) + data
    path = tmp_path / "bogus.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(DecodeError, match="header claims 2000000000 Hz") as info:
        list(FileDecoder(path))
    assert str(path) in str(info.value)


def test_relative_name_with_a_colon_decodes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A timestamped name: ffmpeg would read '2024-06-01T12' as a protocol.
    name = "2024-06-01T12:00:00Z.wav"
    (tmp_path / name).write_bytes((DATA / "catalog" / "S12-J-4_36000hz.wav").read_bytes())
    monkeypatch.chdir(tmp_path)
    dec = FileDecoder(name)
    list(dec)
    assert dec.sample_rate == 36000 and dec.duration_s > 1.0
