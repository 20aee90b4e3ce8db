"""The audio history ring: bounds, slicing, discontinuities and waiting."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from listener.audio.history import AudioHistory, from_pcm16

SR = 1000


def ramp(start: int, n: int) -> np.ndarray:
    """Samples whose value is their absolute index (mod 30000), to check what comes back."""
    # Sample values that 16-bit PCM holds exactly (the history's resolution).
    return from_pcm16((np.arange(start, start + n) % 30000).astype(np.int16))


def fill(h: AudioHistory, seconds: int, block: int = 250) -> None:
    for i in range(0, seconds * SR, block):
        h.append(i / SR, ramp(i, block), SR)


def test_get_returns_the_requested_slice_across_blocks() -> None:
    h = AudioHistory(max_s=10)
    fill(h, 3)
    assert h.available_until_s == pytest.approx(3.0)
    got = h.get(0.9, 1.6)
    assert got is not None
    samples, start = got
    assert start == pytest.approx(0.9)
    np.testing.assert_array_equal(samples, ramp(900, 700))


def test_memory_is_bounded_and_old_audio_dropped() -> None:
    h = AudioHistory(max_s=2)
    for i in range(0, 9900, 300):  # blocks that don't divide the limit: partial trims
        h.append(i / SR, ramp(i, 300), SR)
    assert h.available_until_s == pytest.approx(9.9)
    assert h.available_from_s == pytest.approx(7.9)
    assert h.held_s == pytest.approx(2.0)
    samples, start = h.get(5.0, 9.0)  # type: ignore[misc]
    assert start == pytest.approx(7.9)  # clipped to what is still held
    np.testing.assert_array_equal(samples, ramp(7900, 1100))
    assert h.get(1.0, 7.0) is None  # entirely gone


def test_audio_before_a_gap_stays_at_its_own_time() -> None:
    # A clip decided after a gap must get its own audio, never the audio after the gap.
    h = AudioHistory(max_s=10)
    fill(h, 2)
    h.append(5.0, ramp(5000, 500), SR)  # 3 s of the stream were lost
    assert h.available_from_s == pytest.approx(5.0)
    samples, start = h.get(0.0, 2.0)  # type: ignore[misc]
    assert start == 0.0
    np.testing.assert_array_equal(samples, ramp(0, 2000))
    samples, start = h.get(1.5, 5.2)  # type: ignore[misc]  # more of it before the gap
    assert start == pytest.approx(1.5)
    np.testing.assert_array_equal(samples, ramp(1500, 500))
    samples, start = h.get(4.0, 5.3)  # type: ignore[misc]  # only after the gap
    assert start == pytest.approx(5.0)
    np.testing.assert_array_equal(samples, ramp(5000, 300))
    assert h.get(2.5, 4.5) is None  # inside the hole: nothing, never a neighbour
    h.append(5.5, np.zeros(100, np.float32), 2 * SR)  # sample rate changed
    assert h.sample_rate == 2 * SR and h.available_from_s == pytest.approx(5.5)
    h.reset()
    assert h.get(0, 100) is None and h.available_until_s == float("-inf")


def test_streams_are_kept_apart() -> None:
    h = AudioHistory(max_s=10)
    h.append(0.0, ramp(0, 1000), SR, stream_key="old")
    h.append(0.0, ramp(7000, 1000), SR, stream_key="new")  # a node restart: offsets from 0
    old, _ = h.get(0.0, 1.0, stream_key="old")  # type: ignore[misc]
    new, _ = h.get(0.0, 1.0, stream_key="new")  # type: ignore[misc]
    np.testing.assert_array_equal(old, ramp(0, 1000))
    np.testing.assert_array_equal(new, ramp(7000, 1000))


def test_the_hold_point_keeps_a_backlog_up_to_the_hard_limit() -> None:
    h = AudioHistory(max_s=2, hard_max_s=6)
    h.hold("s", 1.0)  # the next clip starts at 1 s; scoring is behind
    for i in range(0, 5000, 250):
        h.append(i / SR, ramp(i, 250), SR, stream_key="s")
    samples, start = h.get(1.0, 1.5, stream_key="s")  # type: ignore[misc]
    assert start == pytest.approx(1.0)  # kept though 5 s > max_s
    np.testing.assert_array_equal(samples, ramp(1000, 500))
    assert h.held_s == pytest.approx(4.0)
    for i in range(5000, 9000, 250):
        h.append(i / SR, ramp(i, 250), SR, stream_key="s")
    assert h.held_s == pytest.approx(6.0)  # the hard limit wins
    h.hold("s", 8.0)
    h.append(9.0, ramp(9000, 250), SR, stream_key="s")
    assert h.available_from_s == pytest.approx(7.25)  # back to max_s past the hold point


def test_a_new_stream_after_the_held_one_is_kept_with_it() -> None:
    # A node restart while the old folder's last clip is pending: the new
    # folder's audio is the newest and must not be trimmed away.
    h = AudioHistory(max_s=10, hard_max_s=20)
    h.append(0.0, ramp(0, 2000), SR, stream_key="older")
    h.hold("old", 0.0)
    h.append(0.0, ramp(0, 12000), SR, stream_key="old")
    for i in range(0, 5000, 250):
        h.append(i / SR, ramp(20000 + i, 250), SR, stream_key="new")
    assert h.available_until_s == pytest.approx(5.0)
    new, start = h.get(0.0, 5.0, stream_key="new")  # type: ignore[misc]
    assert start == 0.0
    np.testing.assert_array_equal(new, ramp(20000, 5000))
    assert h.get(0.0, 2.0, stream_key="older") is None  # before the hold point's run
    assert h.held_s == pytest.approx(17.0)  # over max_s: the hold point keeps "old"
    h.append(5.0, ramp(25000, 4000), SR, stream_key="new")
    assert h.held_s == pytest.approx(20.0)  # the hard limit, oldest first
    assert h.get(0.0, 1.0, stream_key="old") is None
    new, start = h.get(0.0, 9.0, stream_key="new")  # type: ignore[misc]
    np.testing.assert_array_equal(new, ramp(20000, 9000))


def test_the_caller_buffer_is_copied() -> None:
    h = AudioHistory(max_s=10)
    buf = ramp(0, 100)
    h.append(0.0, buf, SR)
    buf[:] = -1
    samples, _ = h.get(0.0, 0.1)  # type: ignore[misc]
    np.testing.assert_array_equal(samples, ramp(0, 100))


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="-1"):
        AudioHistory(max_s=-1)
    with pytest.raises(ValueError, match="mono"):
        AudioHistory(5).append(0.0, np.zeros((2, 10), np.float32), SR)


def test_wait_until_is_woken_by_appends_from_a_thread() -> None:
    async def main() -> tuple[bool, bool, bool]:
        h = AudioHistory(max_s=10)
        fill(h, 1)
        already = await h.wait_until(0.5, timeout_s=0.01)

        def producer() -> None:
            for i in range(1000, 3000, 100):
                h.append(i / SR, ramp(i, 100), SR)

        thread = threading.Thread(target=producer)
        waiter = asyncio.create_task(h.wait_until(2.9, timeout_s=5))
        await asyncio.sleep(0)
        thread.start()
        arrived = await waiter
        thread.join()
        timed_out = await h.wait_until(10.0, timeout_s=0.05)
        assert not h._waiters  # no leak after timeouts
        h.append(0.0, ramp(0, 10), SR, stream_key="next")
        assert await h.wait_until(10.0, timeout_s=5, stream_key="")  # its stream ended
        return already, arrived, timed_out

    assert asyncio.run(main()) == (True, True, False)
