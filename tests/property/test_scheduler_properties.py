"""Random histories of commands, worker events and time against the real scheduler on the in-memory log.

The leader is the real one (handlers, live board, group commit, dispatch) over a MemoryLog; the
test plays discovery (appending worker events) and the workers (reports), with a clock of its own,
and runs a placement pass after every step. After each step the invariants hold and folding the
log gives the live board; at the end every job is driven to an end and each must have exactly one
terminal event.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import events as ev
from contracts.commands import (
    ConfirmAssignment,
    ReportJobCheckpointed,
    ReportJobFinished,
    ReportJobStarted,
    StopJob,
    SubmitJob,
)
from contracts.dispatch import Assignment
from contracts.errors import DomainError
from services.scheduler.board import JobBoard
from services.scheduler.domain import confirmation
from tests.scheduler_on_memory import MemoryScheduler

WORKERS = {  # fixed per id, so "never more than its slots" is a fixed bound
    "w0": dict(slots=1, gpus=0, labels=("a",)),
    "w1": dict(slots=2, gpus=2, labels=("a", "b")),
    "w2": dict(slots=3, gpus=0, labels=("b",)),
}
SHA = "c" * 64


def capabilities(worker_id: str) -> ev.WorkerCapabilities:
    spec = WORKERS[worker_id]
    gpus = tuple(ev.Gpu(index=i, name="g", memory_mb=1) for i in range(spec["gpus"]))
    return ev.WorkerCapabilities(hostname=worker_id, cpu_cores=1, ram_mb=1, slots=spec["slots"],
                                 labels=spec["labels"], gpus=gpus)


class Leader:
    """The real scheduler, and what the test remembers about the history it drives."""

    def __init__(self, leader: MemoryScheduler) -> None:
        self.leader = leader
        self.submitted: list[str] = []
        self.health = {w: None for w in WORKERS}  # None: never registered

    @property
    def state(self) -> JobBoard:
        return self.leader.state

    @property
    def now(self):
        return self.leader.now

    async def command(self, command) -> None:
        scheduler = self.leader.scheduler
        handler = {SubmitJob: scheduler.submit, StopJob: scheduler.stop}.get(type(command), scheduler.report)
        try:
            reply = await handler(command)
        except DomainError:
            return
        if isinstance(command, SubmitJob) and reply.created:
            self.submitted.append(reply.job_id)
        await self.leader.settle()

    async def place(self) -> None:
        before = list(self.state.queue)
        events = await self.leader.place()
        check_no_overtaking(self.state, before, events, self.now)

    def active(self) -> list[tuple[str, str]]:
        return sorted((j, w) for w, jobs in self.state.running.items() for j in jobs)


def check_no_overtaking(state: JobBoard, queue_before, events, now: datetime) -> None:
    """A job is never placed while a ready job of the same shape ahead of it in the queue is left waiting."""
    placed = {e.job_id for e in events}
    waiting_shapes = set()
    for _, _, job_id in queue_before:
        job = state.jobs[job_id]
        if job.not_before is not None and job.not_before > now:
            continue
        shape = (job.spec.gpus, job.spec.labels)
        if job_id in placed:
            assert shape not in waiting_shapes, f"{job_id} overtook a job of the same shape"
        else:
            waiting_shapes.add(shape)


async def check_invariants(leader: Leader) -> None:
    state = leader.state
    seen = Counter(j for jobs in state.running.values() for j in jobs)
    assert all(n == 1 for n in seen.values()), "a job is active twice"
    for worker_id, jobs in state.running.items():
        slots = [state.jobs[j].slot for j in jobs]
        gpus = [g for j in jobs for g in state.jobs[j].gpu_indices]
        assert len(jobs) <= WORKERS[worker_id]["slots"], "a worker runs more than its slots"
        assert len(set(slots)) == len(slots) and all(s < WORKERS[worker_id]["slots"] for s in slots)
        assert len(set(gpus)) == len(gpus) and all(g < WORKERS[worker_id]["gpus"] for g in gpus)
        assert all(state.jobs[j].worker_id == worker_id and state.jobs[j].status in ("assigned", "running")
                   for j in jobs)
    for job_id, job in state.jobs.items():  # fencing: only the current, unstarted attempt on its worker may start
        confirmed = [(w, n) for w in WORKERS for n in {job.attempt - 1, job.attempt} - {0}
                     if confirmation(ConfirmAssignment(job_id=job_id, attempt=n, worker_id=w), state).confirmed]
        assert confirmed == ([(job.worker_id, job.attempt)] if job.status == "assigned" else []), confirmed
    assert state.queue == sorted(state.queue), "the queue is out of priority/submission order"
    assert all(state.jobs[key[2]].queue_key == key for key in state.queue)
    assert await leader.leader.replayed() == state, "folding the log does not give the live board"
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=JobBoard) == state


async def worker_event(leader: Leader, kind: str, worker_id: str) -> None:
    health, at = leader.health[worker_id], leader.now
    if kind == "register":
        event, health = ev.WorkerRegistered(worker_id=worker_id, capabilities=capabilities(worker_id),
                                            registered_at=at), "healthy"
    elif kind == "lost" and health == "healthy":
        event, health = ev.WorkerLost(worker_id=worker_id, last_seen=at, lost_at=at), "lost"
    elif kind == "returned" and health == "lost":
        event, health = ev.WorkerReturned(worker_id=worker_id, returned_at=at), "healthy"
    elif kind == "left" and health in ("healthy", "lost"):
        event, health = ev.WorkerDeregistered(worker_id=worker_id, deregistered_at=at), "left"
    elif kind == "forgotten" and health in ("lost", "left"):
        event, health = ev.WorkerForgotten(worker_id=worker_id, forgotten_at=at), None
    else:
        return
    leader.health[worker_id] = health
    await leader.leader.worker_event(event)


async def report(leader: Leader, kind: str, pick: int, outcome: str = "completed", retryable: bool = False,
           stale: bool = False) -> None:
    active = leader.active()
    if not active:
        return
    job_id, worker_id = active[pick % len(active)]
    attempt = leader.state.jobs[job_id].attempt
    if stale:
        attempt, worker_id = (attempt + 1, worker_id) if pick % 2 else (attempt, "w-other")
    if kind == "start":
        command = ReportJobStarted(job_id=job_id, attempt=attempt, worker_id=worker_id)
    elif kind == "checkpoint":
        command = ReportJobCheckpointed(job_id=job_id, attempt=attempt, worker_id=worker_id, iteration=pick,
                                        name=f"{job_id}-{attempt}-{pick}", sha256=SHA, size=1)
    else:
        command = ReportJobFinished(job_id=job_id, attempt=attempt, worker_id=worker_id, outcome=outcome,
                                    retryable=retryable, error="e")
    before = await leader.leader.log.last_seq()
    await leader.command(command)
    if stale:
        assert await leader.leader.log.last_seq() == before, "a stale report changed the log"


async def run_step(leader: Leader, step: tuple) -> None:
    kind, *args = step
    if kind == "submit":
        priority, gpus, labels, retries, timeout = args
        await leader.command(SubmitJob(workload="noop", priority=priority, gpus=gpus, labels=labels,
                                       max_retries=retries, timeout_s=timeout))
    elif kind == "worker":
        await worker_event(leader, *args)
    elif kind == "report":
        await report(leader, *args)
    elif kind == "stop" and leader.submitted:
        await leader.command(StopJob(job_id=leader.submitted[args[0] % len(leader.submitted)]))
    elif kind == "tick":
        await leader.leader.tick(args[0])
    await leader.place()


steps = st.one_of(
    st.tuples(st.just("submit"), st.integers(-1, 1), st.integers(0, 2),
              st.sampled_from([(), ("a",), ("b",), ("a", "b")]), st.integers(0, 2), st.sampled_from([None, 5.0])),
    st.tuples(st.just("worker"), st.sampled_from(["register", "lost", "returned", "left", "forgotten"]),
              st.sampled_from(sorted(WORKERS))),
    st.tuples(st.just("report"), st.sampled_from(["start", "checkpoint", "finish"]), st.integers(0, 7),
              st.sampled_from(["completed", "failed", "stopped", "interrupted"]), st.booleans(), st.booleans()),
    st.tuples(st.just("stop"), st.integers(0, 20)),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 2.0, 10.0])),
)


async def drain(leader: Leader) -> None:
    """Bring every worker back and let every job run to completion."""
    for worker_id in WORKERS:
        if leader.health[worker_id] != "healthy":
            await worker_event(leader, "register", worker_id)
    for _ in range(200):
        if not leader.state.jobs:
            return
        await run_step(leader, ("tick", 100.0))
        for job_id, worker_id in leader.active():
            job = leader.state.jobs[job_id]
            for command in (ReportJobStarted(job_id=job_id, attempt=job.attempt, worker_id=worker_id),
                            ReportJobFinished(job_id=job_id, attempt=job.attempt, worker_id=worker_id,
                                              outcome="completed")):
                await leader.command(command)
        await leader.place()
    raise AssertionError(f"jobs never finished: {sorted(leader.state.jobs)}")


async def play(history: list[tuple]) -> None:
    async with MemoryScheduler() as scheduler:
        leader = Leader(scheduler)
        for step in history:
            await run_step(leader, step)
            await check_invariants(leader)
        await drain(leader)
        await check_invariants(leader)
        events = [stored.event for stored in await scheduler.events()]
        terminal = Counter(e.job_id for e in events
                           if isinstance(e, ev.JobCompleted | ev.JobStopped | ev.JobTimedOut)
                           or (isinstance(e, ev.JobFailed) and not e.will_retry))
        assert set(leader.submitted) == set(leader.state.finished) == set(terminal)
        assert all(n == 1 for n in terminal.values()), "a job ended twice"
        assigned = {(e.job_id, e.attempt, e.worker_id) for e in events if isinstance(e, ev.JobAssigned)}
        sent = {(m.job_id, m.attempt, m.worker_id) for m in scheduler.dispatch.sent if isinstance(m, Assignment)}
        assert sent == assigned, "an assignment on the log was not dispatched, or one not on the log was"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, max_size=60))
def test_invariants_hold_and_every_job_ends_exactly_once(history: list[tuple]) -> None:
    asyncio.run(play(history))


async def requeue_in_order(priorities: list[int]) -> None:
    async with MemoryScheduler() as scheduler:
        leader = Leader(scheduler)
        await worker_event(leader, "register", "w2")
        for priority in priorities:
            await leader.command(SubmitJob(workload="noop", priority=priority))
            await leader.place()
        queued_before = [leader.state.jobs[key[2]].queue_key for key in leader.state.queue]
        await worker_event(leader, "lost", "w2")  # its attempts go back to the queue
        keys = list(leader.state.queue)
        assert keys == sorted((-leader.state.jobs[k[2]].spec.priority, leader.state.jobs[k[2]].order, k[2])
                              for k in keys)
        assert set(queued_before) <= set(keys) and len(keys) == len(priorities)
        await worker_event(leader, "register", "w1")  # the leader places on it at once
        await leader.place()
        first_placed = sorted(leader.active())
        expected = [key[2] for key in keys[:WORKERS["w1"]["slots"]]]
        assert sorted(j for j, _ in first_placed) == sorted(expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-2, 2), min_size=1, max_size=12))
def test_requeue_after_a_loss_keeps_priority_order(priorities: list[int]) -> None:
    asyncio.run(requeue_in_order(priorities))
