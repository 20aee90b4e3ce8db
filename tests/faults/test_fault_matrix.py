"""The fault matrix (issue 14): a real daemon against a loopback Orcasound node at
16x, one fault per case; every case must keep the invariants of
``support.fault_node.check_invariants`` (true UTC, every loss reported, no
duplicates, no traceback, /healthz under 1 s)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from support.fault_node import (
    FOLDER,
    NEWER,
    NODE,
    FaultCase,
    FaultNode,
    Segments,
    check_invariants,
    make_tone_segments,
    run_case,
)


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> Segments:
    return make_tone_segments(tmp_path_factory.mktemp("fault_tone"))


def _bad_extinf(text: str) -> str:
    return text.replace("#EXTINF:10.005333,\nlive005.ts", "#EXTINF:-5,\nlive005.ts")


def _uri_without_extinf(text: str) -> str:
    return text.replace("#EXTINF:10.005333,\nlive005.ts", "live005.ts")


def _zero_extinf(text: str) -> str:
    return text.replace("#EXTINF:10.005333,\nlive005.ts", "#EXTINF:0,\nlive005.ts")


def _listed_twice(text: str) -> str:
    return re.sub(r"(#EXTINF:[0-9.]+,\nlive003\.ts\n)", r"\1\1", text)


_HTML = b"<html><head><title>503</title></head><body>Service Unavailable</body></html>\n"
_RANDOM = bytes((i * 7919 + 13) % 256 for i in range(150_000))


def _playlist_reset(node: FaultNode) -> None:
    """The folder's playlist served as a stale copy listing two segments, for 8 polls."""
    lines = node.playlist_text().splitlines(keepends=True)
    third = [i for i, line in enumerate(lines) if line.startswith("#EXTINF")][2]
    node.serve_instead(node.playlist_path(), "".join(lines[:third]).encode(), times=8)


def _older_latest(node: FaultNode) -> None:
    node.serve_instead(node.latest_path, f"{FOLDER - 3600}\n".encode(), times=6)


CASES = [
    FaultCase("clean"),
    FaultCase("404 then appears", at={3: lambda n: n.fail(n.seg_path(3), 404, times=2)}),
    FaultCase("404 forever", at={4: lambda n: n.fail(n.seg_path(4), 404, times=1000)},
              max_lost_s=10.1),
    FaultCase("500 burst", at={5: lambda n: n.fail(n.seg_path(5), 500, times=2)}),
    FaultCase("playlist 500s", at={4: lambda n: n.fail(n.playlist_path(), 500, times=6)}),
    FaultCase("stall past read timeout", at={6: lambda n: n.delay(n.seg_path(6), 2.5)}),
    FaultCase("refused connections", at={3: lambda n: n.drop(n.playlist_path(), times=4)}),
    FaultCase("truncated body", at={5: lambda n: n.truncate(n.seg_path(5))}),
    FaultCase("trickled segment", at={4: lambda n: n.trickle(n.seg_path(4), 0.05)}),
    FaultCase("garbage latest.txt",
              at={3: lambda n: n.serve_instead(n.latest_path, b"<html>\n", times=5)}),
    # finding 3: one bad EXTINF costs one segment, not the stream
    FaultCase("EXTINF:-5", setup=lambda n: setattr(n, "rewrite", _bad_extinf),
              max_lost_s=10.1),
    FaultCase("URI without EXTINF", setup=lambda n: setattr(n, "rewrite", _uri_without_extinf),
              max_lost_s=10.1),
    # finding 5: a stale latest.txt naming an older folder is a glitch
    FaultCase("older latest.txt", at={5: _older_latest}),
    FaultCase("playlist reset to a stale copy", at={5: _playlist_reset}),
    # finding 4: a 100,000-entry folder must not block /healthz
    FaultCase("100k-entry playlist", history=100_000),
    # finding 1: a segment holding less (or more) audio than its EXTINF never moves time
    FaultCase("HTML page with 200", max_lost_s=10.1,
              at={4: lambda n: n.serve_instead(n.seg_path(4), _HTML, times=1000)}),
    FaultCase("random bytes with 200", max_lost_s=10.1,
              at={4: lambda n: n.serve_instead(n.seg_path(4), _RANDOM, times=1000)}),
    FaultCase("empty body with 200", max_lost_s=10.1,
              at={4: lambda n: n.serve_instead(n.seg_path(4), b"", times=1000)}),
    FaultCase("half a segment with 200", max_lost_s=5.5,
              at={4: lambda n: n.shorten(n.seg_path(4), times=1000)}),
    FaultCase("segment listed twice", setup=lambda n: setattr(n, "rewrite", _listed_twice)),
    FaultCase("EXTINF:0", setup=lambda n: setattr(n, "rewrite", _zero_extinf), max_lost_s=10.1),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=str)
def test_fault_case(case: FaultCase, segments: Segments, tmp_path: Path) -> None:
    check_invariants(case, run_case(case, segments, tmp_path))


@pytest.mark.slow
def test_node_restart_into_a_new_folder(segments: Segments, tmp_path: Path) -> None:
    def restart(node: FaultNode) -> None:
        node.start_folder(NODE, NEWER)

    case = FaultCase("node restart", at={4: restart})
    result = run_case(case, segments, tmp_path)
    detections = [e for e in result.events if e["kind"] == "detection"]
    assert len({e["timestamp"] for e in detections}) == len(detections)
    assert not [r for r in result.records if r.exc_info]
    assert max(result.health_s) < 1.0
    assert result.metrics.get("listener_audio_dropped_seconds_total|reason=gap", 0.0) == 0.0


@pytest.mark.slow
def test_old_folder_segment_uploaded_after_the_switch_is_reported(
        segments: Segments, tmp_path: Path) -> None:
    """A segment the old folder's uploader lists after the switch is a reported gap,
    and reporting it leaves the new folder's decoder running."""
    def restart(node: FaultNode) -> None:
        node.start_folder(NODE, NEWER)

    def late(node: FaultNode) -> None:
        node.publish(NODE, segments[4][0], segments[4][1], folder=FOLDER)

    # grace 0.5 s: switched ~1 s after the restart, looked at again 3 s later
    case = FaultCase("late old-folder segment", at={4: restart, 7: late},
                     stream={"restart_grace_s": 0.5}, min_s=9.0)
    result = run_case(case, segments, tmp_path)
    assert not [r for r in result.records if r.exc_info]
    late_url = f"/{NODE}/hls/{FOLDER}/live004.ts"
    assert any("after the switch" in r.getMessage() and late_url in r.getMessage()
               for r in result.records if r.levelno == logging.WARNING)
    m = result.metrics
    assert m["listener_audio_dropped_seconds_total|reason=gap"] == pytest.approx(
        segments[4][1], abs=0.01)
    assert m.get("listener_audio_decoder_restarts_total|reason=gap", 0.0) == 0.0
