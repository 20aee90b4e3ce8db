"""Real MPEG-TS/AAC segments for HLS tests.

:func:`make_ffmpeg_segments` cuts a real recording with ffmpeg's segment
muxer exactly as an Orcasound node does; :func:`load_real_segments` returns
the three real Orcasound segments in ``tests/data/hls/`` (see
``tests/data/ATTRIBUTION.md``).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import m3u8

ROOT = Path(__file__).resolve().parents[1]
REAL_FOLDER = ROOT / "data" / "hls" / "rpi_orcasound_lab" / "1594150218"
REAL_FOLDER_TS = 1594150218
# EXTINF of the three real segments (from their PTS; see tests/data/ATTRIBUTION.md).
REAL_DURATIONS = (9.792, 10.005333, 10.005333)
# The L pod recording ships with the package (listener demo uses it too).
LPOD_WAV = ROOT.parent / "listener" / "data" / "lpod_orcasound_22050hz.wav"

@dataclass(frozen=True)
class TsSegment:
    """One MPEG-TS segment and its EXTINF duration."""

    name: str
    data: bytes
    duration_s: float


def make_ffmpeg_segments(out_dir: Path, wav: Path | None = None) -> list[TsSegment]:
    """Cut a WAV into 10 s AAC/MPEG-TS segments the way an Orcasound node does.

    48 kHz stereo AAC at 128 kbit/s through ffmpeg's segment muxer; durations
    come from the playlist ffmpeg writes alongside (10.005333 s = 469 AAC
    frames, 9.984 s = 468 frames, the last one shorter).
    """
    import imageio_ffmpeg

    wav = wav or LPOD_WAV
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin",
           "-y", "-i", str(wav), "-ar", "48000", "-ac", "2", "-c:a", "aac", "-b:a", "128k",
           "-f", "segment", "-segment_time", "10", "-segment_format", "mpegts",
           "-segment_list", str(out_dir / "live.m3u8"), "-segment_list_type", "m3u8",
           str(out_dir / "live%03d.ts")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    listed = m3u8.parse((out_dir / "live.m3u8").read_text())
    return [TsSegment(seg["uri"], (out_dir / seg["uri"]).read_bytes(), float(seg["duration"]))
            for seg in listed["segments"]]


def load_real_segments() -> list[TsSegment]:
    """The three real Orcasound segments of folder 1594150218."""
    return [TsSegment(f"live{i:03d}.ts", (REAL_FOLDER / f"live{i:03d}.ts").read_bytes(), d)
            for i, d in enumerate(REAL_DURATIONS)]
