"""Fencing before a job runs: which assignments the scheduler confirms to a worker (a pure decision on the board)."""

from __future__ import annotations

import asyncio

import pytest

from contracts import events as ev
from contracts.commands import AssignmentConfirmed, ConfirmAssignment, SubmitJob
from services.scheduler import domain
from tests.scheduler_on_memory import MemoryScheduler
from tests.unit.test_scheduler_domain import T0, assigned, checkpointed, fold, started, submitted, worker


def ask(job_id: str = "j1", attempt: int = 1, worker_id: str = "w1") -> ConfirmAssignment:
    return ConfirmAssignment(job_id=job_id, attempt=attempt, worker_id=worker_id)


def requeued(attempt: int, reason: str = "worker_lost") -> ev.JobRequeued:
    return ev.JobRequeued(job_id="j1", attempt=attempt, reason=reason, requeued_at=T0)


ASSIGNED = (worker(), worker("w2"), submitted(), assigned())


def test_the_current_attempt_is_confirmed_to_its_worker_with_the_scheduler_s_copy() -> None:
    state = fold(*ASSIGNED)
    reply = domain.confirmation(ask(), state)
    assert reply == AssignmentConfirmed(confirmed=True, assignment=domain.assignment_for(state, state.jobs["j1"]))
    assert reply.assignment.workload == "noop" and reply.assignment.worker_id == "w1"


@pytest.mark.parametrize(("events", "question", "reason"), [
    (ASSIGNED, ask(job_id="ghost"), "no job ghost"),
    ((*ASSIGNED, ev.JobCompleted(job_id="j1", attempt=1, completed_at=T0)), ask(),
     "job j1 has already finished (completed)"),
    (ASSIGNED, ask(worker_id="w2"),
     "attempt 1 of job j1 is not assigned to w2: the job is assigned at attempt 1 on w1"),
    ((*ASSIGNED, requeued(2), assigned(attempt=2)), ask(attempt=1), "is assigned at attempt 2 on w1"),  # an old attempt
    ((*ASSIGNED, requeued(2)), ask(attempt=2), "the job is queued at attempt 2"),
    ((*ASSIGNED, started()), ask(), "the job is running at attempt 1 on w1"),  # confirmed once already
    ((worker(), submitted()), ask(), "the job is queued at attempt 1"),
])
def test_anything_but_the_current_unstarted_attempt_on_that_worker_is_refused(events, question, reason) -> None:
    reply = domain.confirmation(question, fold(*events))
    assert not reply.confirmed and reply.assignment is None and not reply.stop
    assert reason in reply.reason


def test_a_job_asked_to_stop_is_confirmed_to_stop_unrun() -> None:
    stop = ev.JobStopRequested(job_id="j1", reason="user", requested_at=T0)
    reply = domain.confirmation(ask(), fold(*ASSIGNED, stop))
    assert reply == AssignmentConfirmed(confirmed=True, stop=True, reason="user")


def test_a_resumed_attempt_is_confirmed_with_the_checkpoints_on_the_log() -> None:
    state = fold(*ASSIGNED, started(), checkpointed(iteration=5, name="j1/1-5"),
                 checkpointed(iteration=9, name="j1/1-9"), requeued(2), assigned(worker_id="w2", attempt=2))
    reply = domain.confirmation(ask(attempt=2, worker_id="w2"), state)
    assert reply.confirmed and [c.name for c in reply.assignment.checkpoints] == ["j1/1-9", "j1/1-5"]
    assert not domain.confirmation(ask(attempt=1, worker_id="w1"), state).confirmed


async def test_the_handler_confirms_exactly_what_it_dispatched_and_appends_nothing() -> None:
    async with MemoryScheduler() as s:
        await s.worker_event(worker())
        accepted = await s.scheduler.submit(SubmitJob(workload="noop", params={"lr": 0.1}))
        confirming = asyncio.create_task(s.scheduler.confirm(ask(accepted.job_id)))  # while JobAssigned is appended
        await s.settle()
        (sent,) = s.dispatch.sent
        before = await s.log.last_seq()
        assert (await confirming) == AssignmentConfirmed(confirmed=True, assignment=sent)
        forged = await s.scheduler.confirm(ask(accepted.job_id, worker_id="w2"))
        assert not forged.confirmed and "not assigned to w2" in forged.reason
        assert await s.log.last_seq() == before  # a confirmation writes nothing, refused or not
