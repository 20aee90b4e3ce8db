"""The station's resume point over several models: the minimum of their durable
clips, never more than ``buffer.max_backlog_s`` behind the primary."""

from __future__ import annotations

from listener.pipeline.lane import LaneProgress, resume_ends

KEY = "rpi_x/hls/1600000000"


def test_the_resume_point_waits_for_the_slowest_model_within_the_bound() -> None:
    ends = resume_ends(KEY, 600.0, [("primary", LaneProgress(KEY, 600.0)),
                                    ("shadow", LaneProgress(KEY, 540.0)),
                                    ("fast", LaneProgress(KEY, 660.0))], 600.0)
    assert ends == {"primary": 600.0, "shadow": 540.0, "fast": 660.0}
    assert min(ends.values()) == 540.0  # the shadow's next clip is scored again


def test_a_model_that_never_decides_cannot_pin_the_resume_point() -> None:
    """A lane with no durable clip (or one far behind, or on an old stream) is
    held at most the bound behind the primary: it would shed that audio anyway."""
    lanes = [("primary", LaneProgress(KEY, 3600.0)), ("never", None),
             ("far", LaneProgress(KEY, 60.0)),
             ("old-stream", LaneProgress("rpi_x/hls/1599990000", 900.0))]
    ends = resume_ends(KEY, 3600.0, lanes, 600.0)
    assert ends == {"primary": 3600.0, "never": 3000.0, "far": 3000.0,
                    "old-stream": 3000.0}
    # Early in a stream the floor is its start.
    assert resume_ends(KEY, 120.0, [("primary", LaneProgress(KEY, 120.0)),
                                    ("never", None)], 600.0) == {"primary": 120.0,
                                                                 "never": 0.0}
