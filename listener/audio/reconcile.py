"""Reconcile each segment's real audio with its place in the playlist's timeline.

The stream decoder turns segments into one run of samples and the windows
take their time from the sample count, so any segment that does not hold
exactly its ``#EXTINF`` of audio would move every later timestamp. Before a
segment reaches ffmpeg, :class:`SegmentReconciler` reads it
(:func:`~listener.audio.probe.probe_segment`) and says what to do:

* no audio at all (an error page with HTTP 200, random bytes, an empty
  body): not fed; its span is lost (``undecodable``) and the next segment
  starts a fresh decoder at its own offset;
* the very bytes of a segment already fed (a playlist listing it twice): not
  fed; its span is lost (``duplicate``);
* a codec other than the running decoder's (MP3 in the middle of AAC): a
  fresh decoder for it;
* AAC frames shorter than ``#EXTINF`` by more than :data:`TOLERANCE_S` (a
  truncated body): fed, the rest of the span is lost (``short_segment``) and
  the decoder is ended after it, so the next segment is placed by its own
  offset again;
* longer (``#EXTINF:0``, a wrong duration): fed, but audio past the span's
  end is dropped (``excess_audio``) and the decoder ended after it.

Pure bookkeeping, no I/O: the pipeline applies the verdicts.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass

from listener.audio.probe import SegmentProbe, probe_segment
from listener.sources.segments import Segment

# Larger than EXTINF rounding in real encoders (ffmpeg writes 6 decimals; a
# few write whole seconds for 10.005 s), far smaller than any lost frame run
# worth reporting: about five AAC frames at 48 kHz.
TOLERANCE_S = 0.1
_REMEMBERED = 16  # segment bodies remembered per stream for duplicate checks


@dataclass(frozen=True)
class Verdict:
    """What to do with one segment.

    Attributes:
        feed: hand its bytes to the decoder.
        restart: reason to start a fresh decoder before feeding it (None: keep).
        end_after: end the decoder after it, so the next segment is re-anchored.
        limit_s: stream offset past which this decoder run's audio is dropped.
        dropped_s: seconds of audio that will not be scored (of its listed span,
            or past its end for ``excess_audio``).
        reason: the drop reason (a ``listener_audio_dropped_seconds_total`` label).
        problem: a sentence for the WARNING (None when all is well).
        probe: what its bytes hold.
    """

    feed: bool
    restart: str | None = None
    end_after: bool = False
    limit_s: float | None = None
    dropped_s: float = 0.0
    reason: str | None = None
    problem: str | None = None
    probe: SegmentProbe | None = None


class SegmentReconciler:
    """Checks each segment of a station, in feed order, against what came before."""

    def __init__(self) -> None:
        self._codec: str | None = None
        self._seen: dict[str, deque[bytes]] = {}

    def decoder_ended(self) -> None:
        """The running decoder is gone; the next fed segment starts a fresh one."""
        self._codec = None

    def check(self, seg: Segment, data: bytes) -> Verdict:
        probe = probe_segment(data)
        if probe.codec is None:
            return self._lost(seg, probe, "undecodable",
                              f"holds no audio ({len(data)} bytes, not MPEG-TS with an "
                              "audio stream)")
        digest = hashlib.sha1(data, usedforsecurity=False).digest()
        seen = self._seen.setdefault(seg.stream_key, deque(maxlen=_REMEMBERED))
        if digest in seen:
            return self._lost(seg, probe, "duplicate",
                              "is byte for byte a segment already decoded (listed twice)")
        seen.append(digest)
        restart = "codec_change" if self._codec not in (None, probe.codec) else None
        self._codec = probe.codec
        return self._duration_verdict(seg, probe, restart)

    def _lost(self, seg: Segment, probe: SegmentProbe, reason: str, why: str) -> Verdict:
        self._codec = None
        return Verdict(feed=False, end_after=True, dropped_s=max(seg.duration_s, 0.0),
                       reason=reason, problem=f"{why}; its {seg.duration_s:.3f} s are lost",
                       probe=probe)

    @staticmethod
    def _duration_verdict(seg: Segment, probe: SegmentProbe, restart: str | None) -> Verdict:
        real = probe.duration_s
        listed = max(seg.duration_s, 0.0)
        if real is None or abs(real - listed) <= TOLERANCE_S:
            return Verdict(feed=True, restart=restart, probe=probe)
        end = seg.offset_s + listed
        if real < listed:
            return Verdict(feed=True, restart=restart, end_after=True, limit_s=end,
                           dropped_s=listed - real, reason="short_segment", probe=probe,
                           problem=f"holds {real:.3f} s of audio but is listed as "
                                   f"{listed:.3f} s; the missing {listed - real:.3f} s "
                                   "are lost")
        return Verdict(feed=True, restart=restart, end_after=True, limit_s=end,
                       dropped_s=real - listed, reason="excess_audio", probe=probe,
                       problem=f"holds {real:.3f} s of audio but is listed as {listed:.3f} s; "
                               f"the {real - listed:.3f} s past its listed end are lost (the "
                               "playlist's timeline has no room for them)")
