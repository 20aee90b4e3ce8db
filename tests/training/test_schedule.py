"""The learning rate's warm-up and cosine decay, and the patience that ignores the warm-up."""

from __future__ import annotations

from itertools import pairwise

import pytest

from listener.training.schedule import out_of_patience, warmup_cosine, warmup_epochs


def test_the_rate_climbs_to_its_peak_then_decays_to_zero() -> None:
    total = 1800
    rates = [warmup_cosine(s, total) for s in range(total + 1)]
    peak = max(range(total + 1), key=rates.__getitem__)
    assert peak == 269 and rates[peak] == pytest.approx(0.95, abs=0.01)  # 15% of the steps
    assert all(a < b for a, b in pairwise(rates[:peak + 1]))
    assert all(a >= b for a, b in pairwise(rates[peak:]))
    assert rates[-1] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(("epochs", "steps", "warm"), [(90, 20, 14), (60, 20, 9), (2, 2, 1),
                                                       (1, 1, 1)])
def test_warmup_epochs(epochs: int, steps: int, warm: int) -> None:
    assert warmup_epochs(epochs, steps) == warm


@pytest.mark.parametrize(("epoch", "best", "stops"), [
    (28, 8, False),   # the eighth demo candidate: best during the warm-up, then a dip
    (33, 8, False),
    (34, 8, True),    # 20 epochs after the warm-up's end (epoch 14)
    (86, 67, False),  # stage 1 of the demo script: best after the warm-up, unchanged
    (87, 67, True),
])
def test_patience_counts_from_the_end_of_the_warm_up(epoch: int, best: int, stops: bool) -> None:
    assert out_of_patience(epoch, best, 20, warmup_epochs(90, 20)) is stops
