"""The monitor's `gpu_missing` rule: fewer GPUs in a host's samples than its service install recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.events import AlertRaised, AlertResolved
from contracts.telemetry import GpuFigures, HostSample
from services.monitor import domain

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
RULE = next(r for r in domain.DEFAULT_RULES if r.name == "gpu_missing")


def sample(seen: int, expected: int | None) -> HostSample:
    gpus = tuple(GpuFigures(index=i, name="NVIDIA H200") for i in range(seen))
    return HostSample(host_id="h1", cpu_percent=1.0, memory_percent=1.0, gpus=gpus, gpus_expected=expected, at=T0)


@pytest.mark.parametrize(("seen", "expected", "reading"), [
    (0, None, None),  # no record (or NVML cannot count): nothing to say
    (1, 1, 0.0), (2, 1, 0.0),
    (0, 1, 1.0), (1, 2, 1.0),
])
def test_the_reading_is_how_many_are_missing(seen, expected, reading) -> None:
    assert domain.readings("gpus_missing", sample(seen, expected)) == reading


def test_missing_gpus_raise_the_alert_after_its_pending_minute_and_resolve_when_they_are_back() -> None:
    board, watch, events = domain.initial_state(), domain.Watch(), []
    for seconds, seen in ((0, 0), (59, 0), (60, 0), (90, 1)):
        step = domain.decide_sample(board, watch, sample(seen, 1), [RULE], T0 + timedelta(seconds=seconds),
                                    lambda: "a1")
        for event in step.events:
            board = domain.evolve(board, event)
        watch, events = step.watch, events + step.events
    assert [type(e) for e in events] == [AlertRaised, AlertResolved]
    assert events[0].rule == "gpu_missing" and events[0].target == "h1" and events[0].value == 1.0
