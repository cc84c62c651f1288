"""The real scheduler handler on the in-memory log: commands, reactions, dispatch, a failed append, no NATS."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from contracts import events as ev
from contracts.commands import ConfirmAssignment, ReportJobFinished, ReportJobStarted, StopJob, SubmitJob
from contracts.dispatch import Assignment, StopAttempt
from eventstore.dispatch import dispatch_id
from eventstore.memory import MemoryLog
from eventstore.records import AppendError, PendingAppend
from tests.scheduler_on_memory import T0, MemoryScheduler


class HeldAssignments(MemoryLog):
    """A log that holds every append of a JobAssigned until `release` (then lands it, or fails it with `fail`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.release = asyncio.Event()
        self.fail: Exception | None = None
        self.holding = 0

    async def append_batch(self, appends: Sequence[PendingAppend], **kwargs):
        if any(isinstance(e, ev.JobAssigned) for a in appends for e in a.events):
            self.holding += 1
            await self.release.wait()
            if self.fail is not None:
                raise self.fail
        return await super().append_batch(appends, **kwargs)


def registered(worker_id: str, slots: int = 1) -> ev.WorkerRegistered:
    caps = ev.WorkerCapabilities(hostname=worker_id, cpu_cores=1, ram_mb=1, slots=slots)
    return ev.WorkerRegistered(worker_id=worker_id, capabilities=caps, registered_at=T0)


def types(events) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_a_submitted_job_is_placed_appended_and_dispatched() -> None:
    async with MemoryScheduler() as s:
        await s.worker_event(registered("w1"))
        accepted = await s.scheduler.submit(SubmitJob(workload="noop", idempotency_key="k"))
        await s.settle()
        assert accepted.created and accepted.seq == 2  # after WorkerRegistered; JobAssigned follows
        assert types(await s.events_since(1)) == ["JobSubmitted", "JobAssigned"]
        assert await s.log.version("job", accepted.job_id) == 3 == s.state.jobs[accepted.job_id].version
        (sent,) = s.dispatch.sent
        assert isinstance(sent, Assignment)
        assert (sent.job_id, sent.attempt, sent.worker_id) == (accepted.job_id, 1, "w1")
        again = await s.scheduler.submit(SubmitJob(workload="noop", idempotency_key="k"))
        assert (again.job_id, again.created) == (accepted.job_id, False)
        assert await s.log.last_seq() == 3


async def test_reports_run_a_job_to_its_end_and_a_stale_attempt_is_fenced() -> None:
    async with MemoryScheduler() as s:
        await s.worker_event(registered("w1"))
        job = (await s.scheduler.submit(SubmitJob(workload="noop"))).job_id
        stale = await s.scheduler.report(ReportJobStarted(job_id=job, attempt=2, worker_id="w1"))
        assert not stale.accepted and stale.stop
        assert (await s.scheduler.report(ReportJobStarted(job_id=job, attempt=1, worker_id="w1"))).accepted
        done = await s.scheduler.report(ReportJobFinished(job_id=job, attempt=1, worker_id="w1", outcome="completed"))
        await s.settle()
        assert done.accepted and not done.stop
        assert types(await s.events_since(1)) == ["JobSubmitted", "JobAssigned", "JobStarted", "JobCompleted"]
        assert s.state.finished[job].status == "completed" and await s.replayed() == s.state


async def test_a_lost_worker_s_attempt_is_requeued_and_placed_on_another() -> None:
    async with MemoryScheduler() as s:
        await s.worker_event(registered("w1"))
        job = (await s.scheduler.submit(SubmitJob(workload="noop"))).job_id
        await s.worker_event(registered("w2"))
        await s.worker_event(ev.WorkerLost(worker_id="w1", last_seen=T0, lost_at=T0))  # as discovery appends it
        assert s.state.jobs[job].worker_id == "w2" and s.state.jobs[job].attempt == 2
        assert [(m.worker_id, m.attempt) for m in s.dispatch.sent] == [("w1", 1), ("w2", 2)]
        assert await s.replayed() == s.state


async def test_stopping_a_running_job_tells_its_worker() -> None:
    async with MemoryScheduler() as s:
        await s.worker_event(registered("w1"))
        job = (await s.scheduler.submit(SubmitJob(workload="noop"))).job_id
        await s.scheduler.report(ReportJobStarted(job_id=job, attempt=1, worker_id="w1"))
        assert (await s.scheduler.stop(StopJob(job_id=job))).job_ids == [job]
        await s.settle()
        assert isinstance(s.dispatch.sent[-1], StopAttempt) and s.dispatch.sent[-1].attempt == 1
        ended = await s.scheduler.report(ReportJobFinished(job_id=job, attempt=1, worker_id="w1", outcome="stopped"))
        assert ended.accepted and s.state.finished[job].status == "stopped"


async def test_an_append_that_conflicts_fails_the_leader_and_the_command_is_decided_again() -> None:
    async with MemoryScheduler() as s:
        await s.worker_event(registered("w1"))
        job = (await s.scheduler.submit(SubmitJob(workload="noop"))).job_id
        await s.settle()
        await s.board.stop()  # the board falls behind the log ...
        version = await s.log.version("job", job)
        await s.log.append("job", job, [ev.JobStopRequested(job_id=job, requested_at=T0)], version)  # another writer
        report = asyncio.create_task(s.scheduler.report(ReportJobStarted(job_id=job, attempt=1, worker_id="w1")))
        await asyncio.wait_for(s.scheduler.failed.wait(), 5)  # ... so its append conflicts
        assert not s.scheduler.ready.is_set()
        await s.board.rebuild()  # what the adapter does next
        await s.scheduler.lead()
        reply = await asyncio.wait_for(report, 5)
        await s.settle()
        assert reply.accepted and reply.stop  # decided again, on a board that knows about the stop request
        assert types(await s.events_since(3)) == ["JobStopRequested", "JobStarted"]
        assert await s.replayed() == s.state


async def test_a_malformed_message_on_a_job_s_subject_moves_its_version() -> None:
    async with MemoryScheduler() as s:
        await s.worker_event(registered("w1"))
        job = (await s.scheduler.submit(SubmitJob(workload="noop"))).job_id
        await s.settle()
        await s.log.append_raw(s.log.topology.events("job", job), b"{not json")
        await s.settle()
        assert s.state.jobs[job].version == await s.log.version("job", job) == 4
        assert (await s.scheduler.report(ReportJobStarted(job_id=job, attempt=1, worker_id="w1"))).accepted
        await s.settle()
        assert not s.scheduler.failed.is_set()
        assert types(await s.events_since(4)) == ["JobStarted"] and s.log.malformed_seen == 1


async def turns(count: int = 100) -> None:
    """Let the scheduler's tasks run a while (bounded)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def submit_one_held(s: MemoryScheduler) -> Assignment:
    """Register w1, submit a job and let its assignment go out while its JobAssigned is held; that assignment."""
    await s.worker_event(registered("w1"))
    await s.scheduler.submit(SubmitJob(workload="noop"))
    await turns()
    (sent,) = s.dispatch.sent  # published without waiting for its JobAssigned
    return sent


async def test_an_assignment_goes_out_while_it_is_appended_and_its_confirmation_waits_for_the_log() -> None:
    held = HeldAssignments(clock=lambda: T0)
    async with MemoryScheduler(log=held) as s:
        sent = await submit_one_held(s)
        assert held.holding == 1 and await s.log.version("job", sent.job_id) == 2  # only JobSubmitted is there
        confirm = asyncio.create_task(s.scheduler.confirm(ConfirmAssignment(job_id=sent.job_id, attempt=1,
                                                                            worker_id="w1")))
        await turns()
        assert not confirm.done()  # not answered from a decision that is not on the log yet
        held.release.set()
        reply = await asyncio.wait_for(confirm, 5)
        assert reply.confirmed and reply.assignment is not None and reply.assignment.job_id == sent.job_id
        await s.settle()
        assert types(await s.events_since(1)) == ["JobSubmitted", "JobAssigned"]


async def test_an_assignment_whose_append_failed_is_refused_and_its_new_decision_is_a_new_message() -> None:
    held = HeldAssignments(clock=lambda: T0)
    async with MemoryScheduler(log=held) as s:
        first = await submit_one_held(s)
        question = ConfirmAssignment(job_id=first.job_id, attempt=1, worker_id="w1")
        confirm = asyncio.create_task(s.scheduler.confirm(question))
        held.fail = AppendError("the log went away")
        held.release.set()
        await asyncio.wait_for(s.scheduler.failed.wait(), 5)
        assert await s.log.version("job", first.job_id) == 2  # JobAssigned never landed
        held.fail = None
        s.now = T0 + timedelta(seconds=1)
        await s.board.rebuild()  # what the adapter does next
        await s.scheduler.lead()  # the job is queued on the rebuilt board: placed again, on the same worker
        reply = await asyncio.wait_for(confirm, 5)
        await s.settle()
        assert reply.confirmed  # the worker's copy names the same attempt, now on the log
        assert types(await s.events_since(1)) == ["JobSubmitted", "JobAssigned"]
        assert len(s.dispatch.sent) == 2  # the stream would not drop the new decision as a duplicate
        second = s.dispatch.sent[1]
        assert (second.job_id, second.attempt, second.worker_id) == (first.job_id, 1, "w1")
        assert dispatch_id(second) != dispatch_id(first)
