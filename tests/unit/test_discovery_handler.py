"""The real discovery handler on the in-memory log: registrations, silence, a second writer, bad messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts import events as ev
from contracts.commands import DeregisterWorker, RegisterWorker
from contracts.errors import NotFound
from contracts.telemetry import WorkerHeartbeat
from eventstore.memory import MemoryLog
from services.discovery import domain
from services.discovery.handlers import Discovery

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMING = domain.Timing(lost_after_s=10, forget_after_s=300)
CAPS = ev.WorkerCapabilities(hostname="box", cpu_cores=2, ram_mb=512)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def started(log: MemoryLog | None = None) -> tuple[Discovery, MemoryLog, Clock]:
    log, clock = log or MemoryLog(), Clock()
    discovery = Discovery(log, TIMING, clock)
    await discovery.load()
    return discovery, log, clock


async def types(log: MemoryLog) -> list[str]:
    return [stored.type async for stored in log.read()]


async def test_a_worker_registers_goes_silent_comes_back_leaves_and_is_forgotten() -> None:
    discovery, log, clock = await started()
    accepted = await discovery.register(RegisterWorker(worker_id="w1", capabilities=CAPS))
    assert (accepted.status, accepted.seq) == ("healthy", 1) and discovery.versions == {"w1": 1}
    clock.advance(11)
    await discovery.tick()
    assert discovery.state.workers["w1"].status == "lost"
    await discovery.heartbeat(WorkerHeartbeat(worker_id="w1", at=clock.now))
    assert discovery.state.workers["w1"].status == "healthy"
    left = await discovery.deregister(DeregisterWorker(worker_id="w1"))
    assert left.status == "left"
    clock.advance(301)
    await discovery.tick()
    assert discovery.state.workers == {}
    assert await types(log) == ["WorkerRegistered", "WorkerLost", "WorkerReturned", "WorkerDeregistered",
                                "WorkerForgotten"]
    again, _log, _clock = await started(log)  # a new leader folds the same registry
    assert again.state == discovery.state and again.versions == discovery.versions


async def test_an_unknown_worker_cannot_leave_and_nothing_is_appended() -> None:
    discovery, log, _clock = await started()
    with pytest.raises(NotFound):
        await discovery.deregister(DeregisterWorker(worker_id="nobody"))
    await discovery.heartbeat(WorkerHeartbeat(worker_id="nobody", at=T0))
    assert await log.last_seq() == 0


async def test_a_second_writer_makes_it_refold_and_decide_again() -> None:
    discovery, log, _clock = await started()
    await discovery.register(RegisterWorker(worker_id="w1", capabilities=CAPS))
    # Another discovery (one that still believed it led) records the worker leaving.
    await log.append("worker", "w1", [ev.WorkerDeregistered(worker_id="w1", deregistered_at=T0)], 1)
    accepted = await discovery.deregister(DeregisterWorker(worker_id="w1"))
    assert accepted.status == "left"
    assert await types(log) == ["WorkerRegistered", "WorkerDeregistered"]  # decided again: already left
    assert discovery.versions == {"w1": 2} and discovery.state.workers["w1"].status == "left"
    await discovery.register(RegisterWorker(worker_id="w1", capabilities=CAPS))
    assert discovery.versions == {"w1": 3}


async def test_a_malformed_worker_message_counts_in_the_version() -> None:
    log = MemoryLog()
    await log.append("worker", "w1", [ev.WorkerRegistered(worker_id="w1", capabilities=CAPS, registered_at=T0)])
    await log.append_raw(log.topology.events("worker", "w1"), b"{not json")
    discovery, _log, _clock = await started(log)
    assert discovery.versions == {"w1": 2} and discovery.state.workers["w1"].status == "healthy"
    accepted = await discovery.register(RegisterWorker(worker_id="w1", capabilities=CAPS, draining=True))
    assert (accepted.status, accepted.seq) == ("draining", 3)
