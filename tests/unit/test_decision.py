"""eventstore.decision and eventstore.follow on the in-memory log: decide-and-append with retries, follow forever."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from contracts import events as ev
from eventstore.decision import Folded, run_decision
from eventstore.follow import follow_forever
from eventstore.memory import MemoryLog
from eventstore.records import ConcurrencyError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CAPS = ev.WorkerCapabilities(hostname="box", cpu_cores=1, ram_mb=1)


def registered(worker_id: str) -> ev.WorkerRegistered:
    return ev.WorkerRegistered(worker_id=worker_id, capabilities=CAPS, registered_at=T0)


def lost(worker_id: str) -> ev.WorkerLost:
    return ev.WorkerLost(worker_id=worker_id, last_seen=T0, lost_at=T0)


def count(state: dict[str, int], event: ev.Event) -> dict[str, int]:
    """A tiny pure fold: events per worker."""
    return {**state, event.aggregate_id: state.get(event.aggregate_id, 0) + 1}


async def folded_from(log: MemoryLog) -> Folded[dict[str, int]]:
    state: dict[str, int] = {}
    versions: dict[str, int] = {}
    async for stored in log.read():
        state = count(state, stored.event)
        versions[stored.aggregate_id] = stored.seq
    return Folded(state, versions)


@pytest.mark.parametrize("atomic", [True, False])
async def test_a_decision_over_several_aggregates_lands_with_their_versions(atomic: bool) -> None:
    log = MemoryLog()
    await log.append("worker", "a", [registered("a")])
    decided = await run_decision(log, "worker", lambda state: [lost("a"), registered("b")], count,
                                 load=lambda: folded_from(log), atomic=atomic)
    assert decided.last_seq == 3 and dict(decided.folded.versions) == {"a": 2, "b": 3}
    assert decided.folded.state == {"a": 2, "b": 1} == (await folded_from(log)).state


async def test_a_conflict_loads_again_and_decides_on_the_new_state() -> None:
    log = MemoryLog()
    stale = Folded({}, {})  # folded before "a" registered elsewhere
    await log.append("worker", "a", [registered("a")])
    seen: list[dict[str, int]] = []

    def decide(state: dict[str, int]) -> list[ev.Event]:
        seen.append(state)
        return [] if state.get("a") else [registered("a")]

    decided = await run_decision(log, "worker", decide, count, load=lambda: folded_from(log), start=stale)
    assert seen == [{}, {"a": 1}] and decided.events == [] and await log.last_seq() == 1


async def test_unchecked_events_go_without_an_expected_version() -> None:
    log = MemoryLog()
    await log.append("worker", "a", [registered("a")])
    decided = await run_decision(log, "worker", lambda state: [lost("a")], count, load=lambda: folded_from(log),
                                 start=Folded({}, {}), checked=lambda event: not isinstance(event, ev.WorkerLost))
    assert decided.last_seq == 2  # no conflict, though the state said "a" had no events


async def test_it_gives_up_after_its_tries_with_the_last_error() -> None:
    log = MemoryLog()
    loads = 0

    async def load() -> Folded[dict[str, int]]:
        nonlocal loads
        loads += 1
        folded = await folded_from(log)
        await log.append("worker", "a", [lost("a")])  # someone always writes in between
        return folded

    await log.append("worker", "a", [registered("a")])
    with pytest.raises(ConcurrencyError):
        await run_decision(log, "worker", lambda state: [registered("a")], count, load=load,
                           start=Folded({}, {"a": 0}), tries=2)
    assert loads == 2


async def test_follow_forever_restarts_after_the_last_applied_message() -> None:
    log = MemoryLog()
    for worker in "abc":
        await log.append("worker", worker, [registered(worker)])
    applied: list[int] = []
    failed: list[int] = []

    def apply(msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq == 2 and not failed:
            failed.append(seq)
            raise RuntimeError("apply broke")
        applied.append(seq)

    task = asyncio.create_task(follow_forever(log, lambda: applied[-1] if applied else 0, apply, name="test",
                                              backoff_s=0.01))
    try:
        await log.append("worker", "d", [registered("d")])
        for _ in range(500):
            if len(applied) == 4:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert failed == [2] and applied == [1, 2, 3, 4]


async def test_cancel_and_wait_cancels_again_a_task_that_swallowed_the_first_cancel() -> None:
    import asyncio

    from eventstore.follow import cancel_and_wait

    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # as asyncio.wait_for on 3.11 can: the first cancellation is lost

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=5.0, retry_s=0.05) == []
    assert task.cancelled() and swallowed == 1
