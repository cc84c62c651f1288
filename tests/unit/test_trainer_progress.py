"""Progress coalescing in the job process: few samples on the wire, the newest never lost."""

from __future__ import annotations

import math

import pytest

from services.trainer.context import Coalescer, progress_frame, to_floats


def sample(i: int):
    return (i, None, {}, 0.0)


def test_first_sample_goes_out_at_once():
    assert Coalescer(0.1).offer(sample(1), now=5.0) == sample(1)


def test_samples_within_the_interval_are_held_back_newest_wins():
    c = Coalescer(0.1)
    c.offer(sample(1), now=0.0)
    assert c.offer(sample(2), now=0.03) is None
    assert c.offer(sample(3), now=0.06) is None
    assert c.pending == sample(3)
    assert c.due(now=0.08) is None
    assert c.due(now=0.10) == sample(3)
    assert c.due(now=0.5) is None


def test_a_sample_after_the_interval_goes_out_and_clears_the_pending_one():
    c = Coalescer(0.1)
    c.offer(sample(1), now=0.0)
    c.offer(sample(2), now=0.05)
    assert c.offer(sample(3), now=0.2) == sample(3)
    assert c.pending is None


def test_take_flushes_whatever_is_pending():
    c = Coalescer(10.0)
    c.offer(sample(1), now=0.0)
    c.offer(sample(2), now=0.1)
    assert c.take(now=0.2) == sample(2)
    assert c.take(now=0.3) is None


@pytest.mark.parametrize("rate", [1_000, 100_000])
def test_at_most_one_sample_per_interval_whatever_the_rate(rate):
    c = Coalescer(0.1)
    sent = [s for i in range(rate) if (s := c.offer(sample(i), now=i / rate)) is not None]
    last = c.take(now=1.0)
    assert len(sent) <= 11
    assert (last or sent[-1])[0] == rate - 1


def test_zero_interval_sends_everything():
    c = Coalescer(0.0)
    assert all(c.offer(sample(i), now=0.0) == sample(i) for i in range(5))


def test_metrics_become_floats_and_odd_values_are_dropped():
    class Scalar:
        def __float__(self):
            return 2.5

    assert to_floats({"a": 1, "b": Scalar(), "c": "text", "d": None}) == {"a": 1.0, "b": 2.5}


def test_a_non_finite_loss_is_flagged_not_sent():
    frame = progress_frame((7, math.nan, {"score": 3}, 1.0))
    assert frame.loss is None and frame.metrics == {"score": 3.0, "loss_nonfinite": 1.0}
    assert progress_frame((7, 0.5, {}, 1.0)).loss == 0.5
