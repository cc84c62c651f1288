"""The committer's order: each job's events in decided order, and no job held back by another's wait."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from contracts import events as ev
from eventstore.memory import MemoryLog
from eventstore.records import PendingAppend
from services.scheduler.committer import Committer, _Item, _one_per_aggregate, _takeable
from tests.scheduler_on_memory import T0


def started(job: str) -> ev.JobStarted:
    return ev.JobStarted(job_id=job, attempt=1, worker_id="w1", started_at=T0)


def completed(job: str) -> ev.JobCompleted:
    return ev.JobCompleted(job_id=job, attempt=1, completed_at=T0)


class HeldJob(MemoryLog):
    """Holds the first append of one job until `release` is set."""

    def __init__(self, job: str) -> None:
        super().__init__(clock=lambda: T0)
        self.job, self.release, self.order = job, asyncio.Event(), []

    async def append_batch(self, appends: Sequence[PendingAppend], **kwargs):
        if any(a.aggregate_id == self.job for a in appends) and not self.release.is_set():
            await self.release.wait()
        result = await super().append_batch(appends, **kwargs)
        self.order.extend(type(e).__name__ + ":" + a.aggregate_id for a in appends for e in a.events)
        return result


async def test_a_job_waiting_on_its_own_append_does_not_hold_back_another_job() -> None:
    log = HeldJob("a")
    committer = Committer(log)
    runner = asyncio.create_task(committer.run())
    try:
        first = committer.enqueue("a", [started("a")], ["id-a1"], 0)
        second = committer.enqueue("a", [completed("a")], ["id-a2"], 0)  # needs the first's version
        other = committer.enqueue("b", [started("b")], ["id-b1"], 0)
        await asyncio.wait_for(other, 5)  # landed while job a's first append is held
        assert not first.done() and not second.done()
        log.release.set()
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        assert log.order == ["JobStarted:b", "JobStarted:a", "JobCompleted:a"]
        assert await log.version("job", "a") == await second
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def item(aggregate_id: str, events: int = 1) -> _Item:
    loop = asyncio.new_event_loop()
    try:
        return _Item(aggregate_id, [started(aggregate_id)] * events, ["x"] * events, loop.create_future())
    finally:
        loop.close()


@given(st.lists(st.sampled_from("abcd"), max_size=30), st.sets(st.sampled_from("abcd")),
       st.integers(min_value=1, max_value=40))
def test_what_is_taken_keeps_each_job_in_order_and_skips_only_what_must_wait(jobs, busy, limit) -> None:
    queue = [item(j) for j in jobs]
    chosen, count = _takeable(queue, dict.fromkeys(busy, 1), limit)
    assert count == len(chosen) <= limit and chosen == sorted(chosen)
    for index in chosen:  # nothing of a busy job, nor anything that overtakes an earlier item of its job
        job = jobs[index]
        assert job not in busy and all(i in chosen for i in range(index) if jobs[i] == job)
    if len(chosen) < limit:  # under the limit, every item of a job not in flight goes
        assert {jobs[i] for i in chosen} == {j for j in jobs if j not in busy}
    singles = _one_per_aggregate(queue, chosen)
    assert [jobs[i] for i in singles] == list(dict.fromkeys(jobs[i] for i in chosen))
