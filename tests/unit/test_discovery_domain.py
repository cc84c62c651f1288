"""Discovery's decider: registration, deregistration, heartbeats and silence, as tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts import events as ev
from contracts.commands import DeregisterWorker, RegisterWorker
from contracts.errors import InvalidCommand, NotFound
from services.discovery import domain

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TIMING = domain.Timing(lost_after_s=10, forget_after_s=300)


def caps(slots: int = 1, gpu_indices: tuple[int, ...] = ()) -> ev.WorkerCapabilities:
    return ev.WorkerCapabilities(hostname="box", cpu_cores=2, ram_mb=512, slots=slots,
                                 gpus=tuple(ev.Gpu(index=i, name="g", memory_mb=1) for i in gpu_indices))


def fold(*events: ev.Event) -> domain.Registry:
    state = domain.initial_state()
    for event in events:
        state = domain.evolve(state, event)
    return state


def registered(worker_id: str = "w1", at: datetime = T0, slots: int = 1) -> ev.WorkerRegistered:
    return ev.WorkerRegistered(worker_id=worker_id, capabilities=caps(slots), registered_at=at)


LOST = ev.WorkerLost(worker_id="w1", last_seen=T0, lost_at=T0 + timedelta(seconds=10))
LEFT = ev.WorkerDeregistered(worker_id="w1", deregistered_at=T0 + timedelta(seconds=5))


@pytest.mark.parametrize("before", [(), (registered(),), (registered(), LOST), (registered(), LEFT)])
def test_registration_always_records_the_worker_healthy(before) -> None:
    state = fold(*before)
    events = domain.decide(RegisterWorker(worker_id="w1", capabilities=caps(slots=3)), state, T0)
    assert events == [ev.WorkerRegistered(worker_id="w1", capabilities=caps(slots=3), registered_at=T0)]
    after = domain.evolve(state, events[0]).workers["w1"]
    assert after.status == "healthy" and after.capabilities.slots == 3


def test_a_worker_that_is_leaving_says_it_is_draining() -> None:
    state = fold(registered())
    events = domain.decide(RegisterWorker(worker_id="w1", capabilities=caps(), draining=True), state, T0)
    assert events == [ev.WorkerRegistered(worker_id="w1", capabilities=caps(), registered_at=T0, draining=True)]
    assert domain.evolve(state, events[0]).workers["w1"].status == "healthy"  # alive, heartbeating, still listed


@pytest.mark.parametrize(("capabilities", "message"), [
    (caps(gpu_indices=(0, 0)), "distinct"),
    (caps(slots=domain.MAX_SLOTS + 1), "at most"),
])
def test_impossible_capabilities_are_refused(capabilities, message) -> None:
    with pytest.raises(InvalidCommand, match=message):
        domain.decide(RegisterWorker(worker_id="w1", capabilities=capabilities), fold(), T0)


@pytest.mark.parametrize(("before", "expected"), [
    ((registered(),), [ev.WorkerDeregistered]),
    ((registered(), LOST), [ev.WorkerDeregistered]),
    ((registered(), LEFT), []),
])
def test_deregistration(before, expected) -> None:
    events = domain.decide(DeregisterWorker(worker_id="w1"), fold(*before), T0)
    assert [type(e) for e in events] == expected


def test_deregistering_an_unknown_worker_is_not_found() -> None:
    with pytest.raises(NotFound):
        domain.decide(DeregisterWorker(worker_id="ghost"), fold(), T0)


@pytest.mark.parametrize(("before", "expected"), [
    ((registered(), LOST), [ev.WorkerReturned(worker_id="w1", returned_at=T0)]),
    ((registered(),), []),
    ((registered(), LEFT), []),
    ((), []),
])
def test_heartbeat_table(before, expected) -> None:
    assert domain.decide_heartbeat(fold(*before), "w1", T0) == expected


@pytest.mark.parametrize(("silent_for", "expected"), [(9.9, []), (10, ["WorkerLost"]), (60, ["WorkerLost"])])
def test_silence_makes_a_healthy_worker_lost(silent_for: float, expected: list[str]) -> None:
    now = T0 + timedelta(seconds=silent_for)
    events = domain.decide_tick(fold(registered()), {"w1": T0}, now, TIMING)
    assert [type(e).__name__ for e in events] == expected
    if events:
        assert events[0].last_seen == T0 and events[0].lost_at == now


@pytest.mark.parametrize(("gone", "since"), [(LOST, LOST.lost_at), (LEFT, LEFT.deregistered_at)])
def test_long_gone_workers_are_forgotten(gone, since) -> None:
    state = fold(registered(), gone)
    assert domain.decide_tick(state, {}, since + timedelta(seconds=299), TIMING) == []
    at = since + timedelta(seconds=300)
    assert domain.decide_tick(state, {}, at, TIMING) == [ev.WorkerForgotten(worker_id="w1", forgotten_at=at)]
    assert domain.evolve(state, ev.WorkerForgotten(worker_id="w1", forgotten_at=at)).workers == {}


def test_a_takeover_gives_healthy_workers_time_to_be_heard() -> None:
    state = fold(registered("w1"), registered("w2"), registered("w3"),
                 ev.WorkerLost(worker_id="w3", last_seen=T0, lost_at=T0))
    much_later = T0 + timedelta(hours=1)
    seen = domain.seed_seen(state, {"w2": T0, "ghost": T0}, much_later)
    assert seen == {"w1": much_later, "w2": T0}
    events = domain.decide_tick(state, seen, much_later, TIMING)
    assert [(type(e).__name__, e.worker_id) for e in events] == [("WorkerLost", "w2"), ("WorkerForgotten", "w3")]


def test_evolve_returns_a_new_registry_and_leaves_the_old_one_alone() -> None:
    before = fold(registered())
    after = domain.evolve(before, LOST)
    assert before.workers["w1"].status == "healthy" and after.workers["w1"].status == "lost"
    assert after.workers["w1"].since == LOST.lost_at


def test_events_about_unknown_workers_change_nothing() -> None:
    state = fold(registered())
    for event in (ev.WorkerLost(worker_id="x", last_seen=T0, lost_at=T0),
                  ev.WorkerReturned(worker_id="x", returned_at=T0),
                  ev.WorkerForgotten(worker_id="x", forgotten_at=T0)):
        assert domain.evolve(state, event) == state
