"""The GPU check before a worker registers (services.trainer.gpucheck): expected vs seen → decision."""

from __future__ import annotations

import pytest

from contracts.events import Gpu
from services.trainer.gpucheck import GpuPolicy, backoff, decide_gpus, missing_gpus

H200, L4 = "NVIDIA H200", "NVIDIA L4"
POLICY = GpuPolicy(first_delay_s=1.0, max_delay_s=30.0, alert_after_s=60.0)


def gpus(*names: str) -> list[Gpu]:
    return [Gpu(index=i, name=n, memory_mb=1000) for i, n in enumerate(names)]


@pytest.mark.parametrize(("expected", "seen", "attempt", "waited", "alerted", "action", "delay", "missing"), [
    ((), (), 0, 0.0, False, "ready", 0.0, ()),                        # nothing recorded: nothing to wait for
    ((H200,), (H200,), 0, 0.0, False, "ready", 0.0, ()),
    ((H200,), (H200, H200), 0, 0.0, False, "ready", 0.0, ()),         # more than at install is fine
    ((H200, H200), (H200,), 0, 0.0, False, "wait", 1.0, (H200,)),     # one of two missing
    ((H200,), (), 0, 0.0, False, "wait", 1.0, (H200,)),               # driver not loaded yet
    ((H200,), (), 3, 7.0, False, "wait", 8.0, (H200,)),               # backoff doubles
    ((H200,), (), 10, 59.9, False, "wait", 30.0, (H200,)),            # and is capped
    ((H200,), (), 6, 60.0, False, "alert", 30.0, (H200,)),            # silence long enough: the alert, once
    ((H200,), (), 7, 90.0, True, "wait", 30.0, (H200,)),              # raised already: keep waiting quietly
    ((H200,), (L4,), 0, 0.0, False, "wait", 1.0, (H200,)),            # another model is not the same device
    ((H200, L4), (L4, H200), 0, 0.0, False, "ready", 0.0, ()),        # order does not matter
])
def test_decision_table(expected, seen, attempt, waited, alerted, action, delay, missing) -> None:
    decision = decide_gpus(gpus(*expected), gpus(*seen), attempt, waited, alerted, POLICY)
    assert (decision.action, decision.delay_s, decision.missing) == (action, delay, missing)


def test_the_message_says_what_is_missing_and_that_it_will_not_use_the_cpu() -> None:
    decision = decide_gpus(gpus(H200, H200), gpus(), 0, 0.0, False, POLICY)
    assert "expected 2 x NVIDIA H200" in decision.message and "seen none" in decision.message
    assert "not starting on the CPU" in decision.message


def test_missing_counts_each_device() -> None:
    assert missing_gpus(gpus(H200, H200, L4), gpus(H200)) == (H200, L4)
    assert missing_gpus(gpus(H200, H200), gpus()) == (H200, H200)


def test_backoff_never_overflows() -> None:
    assert backoff(10_000, POLICY) == POLICY.max_delay_s
