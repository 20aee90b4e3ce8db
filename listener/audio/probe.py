"""What an MPEG-TS segment really holds, read from its bytes before ffmpeg sees them.

The stream decoder counts samples, so a segment whose audio is shorter or
longer than its ``#EXTINF`` (an error page served with HTTP 200, a body cut
in half, ``#EXTINF:0``) would shift every later timestamp. This module reads
the transport stream (PAT -> PMT -> the audio PID's PES packets) and, for
AAC in ADTS, counts the frames: 1024 samples each, so the segment's real
duration is known to the sample. Nothing is decoded and nothing is trusted
beyond what is checked: a frame that runs past the end of the data is not
counted, and the parse is linear in the body's size.

Pure functions over bytes; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

TS_PACKET = 188
_SYNC = 0x47
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025,
              8000, 7350)
# PMT stream types (ISO/IEC 13818-1 table 2-34 and common registrations).
_CODECS = {0x0F: "aac", 0x11: "aac_latm", 0x03: "mp3", 0x04: "mp3", 0x81: "ac3",
           0x87: "eac3"}


@dataclass(frozen=True)
class SegmentProbe:
    """A segment as its bytes describe it.

    Attributes:
        codec: the audio stream's codec (``aac``, ``mp3``, ...), or None when
            the body is no MPEG-TS with an audio stream (an error page,
            random bytes, an empty body).
        frames: AAC frames found (0 for other codecs).
        sample_rate: the AAC sample rate (0 when unknown).
        first_pts: the first audio PES timestamp, 90 kHz units (None if absent).
    """

    codec: str | None
    frames: int = 0
    sample_rate: int = 0
    first_pts: int | None = None

    @property
    def duration_s(self) -> float | None:
        """The audio's length (AAC only); None when it cannot be counted."""
        if self.codec != "aac" or not self.sample_rate:
            return None
        return self.frames * 1024 / self.sample_rate


def probe_segment(data: bytes) -> SegmentProbe:
    """Read ``data`` (one MPEG-TS segment) without decoding it."""
    if len(data) < TS_PACKET or data[0] != _SYNC:
        return SegmentProbe(None)
    pmt_pid: int | None = None
    audio_pid: int | None = None
    codec: str | None = None
    es = bytearray()
    first_pts: int | None = None
    for pid, start, payload in _packets(data):
        if pid == 0 and start and pmt_pid is None:
            pmt_pid = _pat_pmt_pid(payload)
        elif pid == pmt_pid and start and audio_pid is None:
            found = _pmt_audio(payload)
            if found is not None:
                audio_pid, codec = found
        elif pid == audio_pid:
            if start:
                body, pts = _pes_payload(payload)
                if first_pts is None:
                    first_pts = pts
                es += body
            elif es or first_pts is not None:
                es += payload
    if codec is None:
        return SegmentProbe(None)
    if codec != "aac":
        return SegmentProbe(codec, first_pts=first_pts)
    frames, rate = count_adts_frames(bytes(es))
    return SegmentProbe("aac" if frames else None, frames, rate, first_pts)


def _packets(data: bytes) -> list[tuple[int, bool, bytes]]:
    """``(pid, payload_unit_start, payload)`` of each whole, in-sync packet."""
    out = []
    for at in range(0, len(data) - TS_PACKET + 1, TS_PACKET):
        if data[at] != _SYNC:
            break  # lost sync: what follows is not this stream
        b1, b2, b3 = data[at + 1], data[at + 2], data[at + 3]
        if b1 & 0x80:
            continue  # transport error indicator
        pid = ((b1 & 0x1F) << 8) | b2
        control = (b3 >> 4) & 0x3
        pos = at + 4
        if control & 0x2:
            pos += 1 + data[pos]
        if not control & 0x1 or pos >= at + TS_PACKET:
            continue
        out.append((pid, bool(b1 & 0x40), data[pos:at + TS_PACKET]))
    return out


def _section(payload: bytes) -> bytes:
    """A PSI section after its pointer field, cut to its declared length."""
    if not payload:
        return b""
    start = 1 + payload[0]
    sec = payload[start:]
    if len(sec) < 3:
        return b""
    length = ((sec[1] & 0x0F) << 8) | sec[2]
    return sec[:3 + length]


def _pat_pmt_pid(payload: bytes) -> int | None:
    sec = _section(payload)
    # header (8 bytes) then 4-byte program entries, then a 4-byte CRC.
    for at in range(8, len(sec) - 4 - 3, 4):
        program = (sec[at] << 8) | sec[at + 1]
        if program != 0:
            return ((sec[at + 2] & 0x1F) << 8) | sec[at + 3]
    return None


def _pmt_audio(payload: bytes) -> tuple[int, str] | None:
    sec = _section(payload)
    if len(sec) < 12:
        return None
    info_len = ((sec[10] & 0x0F) << 8) | sec[11]
    at = 12 + info_len
    while at + 5 <= len(sec) - 4:
        stream_type = sec[at]
        pid = ((sec[at + 1] & 0x1F) << 8) | sec[at + 2]
        es_info = ((sec[at + 3] & 0x0F) << 8) | sec[at + 4]
        if stream_type in _CODECS:
            return pid, _CODECS[stream_type]
        at += 5 + es_info
    return None


def _pes_payload(payload: bytes) -> tuple[bytes, int | None]:
    """The elementary stream bytes of a PES packet's first TS payload, and its PTS."""
    if len(payload) < 9 or payload[:3] != b"\x00\x00\x01":
        return b"", None
    header_len = payload[8]
    pts = None
    if payload[7] & 0x80 and len(payload) >= 14:
        p = payload[9:14]
        pts = (((p[0] >> 1) & 0x07) << 30) | (p[1] << 22) | ((p[2] >> 1) << 15) \
            | (p[3] << 7) | (p[4] >> 1)
    return payload[9 + header_len:], pts


def count_adts_frames(es: bytes) -> tuple[int, int]:
    """Whole AAC frames in an ADTS elementary stream, and their sample rate.

    Counts ``raw_data_blocks`` (1024 samples each). Junk between frames is
    skipped to the next valid header; a frame past the end is not counted.
    """
    frames, rate, at, n = 0, 0, 0, len(es)
    while at + 7 <= n:
        if es[at] != 0xFF or (es[at + 1] & 0xF6) != 0xF0:
            at += 1
            continue
        rate_index = (es[at + 2] >> 2) & 0x0F
        length = ((es[at + 3] & 0x03) << 11) | (es[at + 4] << 3) | (es[at + 5] >> 5)
        if rate_index >= len(_AAC_RATES) or length < 7:
            at += 1
            continue
        if at + length > n:
            break
        frames += (es[at + 6] & 0x03) + 1
        rate = rate or _AAC_RATES[rate_index]
        at += length
    return frames, rate
