"""Random histories of commands, worker events and time against the scheduler's decider.

A small simulator plays the leader: decide, evolve the live board, append to a list (the log),
react to worker events, run a placement pass after every step. After each step the invariants
hold; at the end every job is driven to an end and each must have exactly one terminal event.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import events as ev
from contracts.commands import ReportJobCheckpointed, ReportJobFinished, ReportJobStarted, StopJob, SubmitJob
from contracts.errors import DomainError
from services.scheduler import domain
from services.scheduler.board import JobBoard, evolve, initial_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)
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
    """The handler's loop, without I/O."""

    def __init__(self) -> None:
        self.state, self.log, self.now, self.ids = initial_state(), [], T0, 0
        self.submitted: list[str] = []
        self.health = {w: None for w in WORKERS}  # None: never registered

    def new_id(self) -> str:
        self.ids += 1
        return f"j{self.ids}"

    def apply(self, events: list[ev.Event]) -> None:
        for event in events:
            evolve(self.state, event)
            self.log.append(event)
            if isinstance(event, ev.WorkerEvent):
                self.apply(domain.on_worker_event(self.state, event, self.now))

    def command(self, command) -> None:
        try:
            events = domain.decide(command, self.state, self.now, new_job_id=self.new_id)
        except DomainError:
            return
        self.submitted.extend(e.job_id for e in events if isinstance(e, ev.JobSubmitted))
        self.apply(events)

    def place(self) -> None:
        before = list(self.state.queue)
        events = domain.assign(self.state, self.now)
        check_no_overtaking(self.state, before, events, self.now)
        self.apply(events)

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
        shape = (job.gpus, job.labels)
        if job_id in placed:
            assert shape not in waiting_shapes, f"{job_id} overtook a job of the same shape"
        else:
            waiting_shapes.add(shape)


def check_invariants(leader: Leader) -> None:
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
    assert state.queue == sorted(state.queue), "the queue is out of priority/submission order"
    assert all(state.jobs[key[2]].queue_key == key for key in state.queue)
    replayed = initial_state()
    for event in leader.log:
        evolve(replayed, event)
    assert replayed == state, "folding the log does not give the live board"
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=JobBoard) == state


def worker_event(leader: Leader, kind: str, worker_id: str) -> None:
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
    leader.apply([event])


def report(leader: Leader, kind: str, pick: int, outcome: str = "completed", retryable: bool = False,
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
    before = len(leader.log)
    leader.command(command)
    if stale:
        assert len(leader.log) == before, "a stale report changed the log"


def run_step(leader: Leader, step: tuple) -> None:
    kind, *args = step
    if kind == "submit":
        priority, gpus, labels, retries, timeout = args
        leader.command(SubmitJob(workload="noop", priority=priority, gpus=gpus, labels=labels,
                                 max_retries=retries, timeout_s=timeout))
    elif kind == "worker":
        worker_event(leader, *args)
    elif kind == "report":
        report(leader, *args)
    elif kind == "stop" and leader.submitted:
        leader.command(StopJob(job_id=leader.submitted[args[0] % len(leader.submitted)]))
    elif kind == "tick":
        leader.now += timedelta(seconds=args[0])
        leader.apply(domain.tick(leader.state, leader.now))
    leader.place()


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


def drain(leader: Leader) -> None:
    """Bring every worker back and let every job run to completion."""
    for worker_id in WORKERS:
        if leader.health[worker_id] != "healthy":
            worker_event(leader, "register", worker_id)
    for _ in range(200):
        if not leader.state.jobs:
            return
        run_step(leader, ("tick", 100.0))
        for job_id, worker_id in leader.active():
            job = leader.state.jobs[job_id]
            for command in (ReportJobStarted(job_id=job_id, attempt=job.attempt, worker_id=worker_id),
                            ReportJobFinished(job_id=job_id, attempt=job.attempt, worker_id=worker_id,
                                              outcome="completed")):
                leader.command(command)
        leader.place()
    raise AssertionError(f"jobs never finished: {sorted(leader.state.jobs)}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, max_size=60))
def test_invariants_hold_and_every_job_ends_exactly_once(history: list[tuple]) -> None:
    leader = Leader()
    for step in history:
        run_step(leader, step)
        check_invariants(leader)
    drain(leader)
    check_invariants(leader)
    terminal = Counter(e.job_id for e in leader.log
                       if isinstance(e, ev.JobCompleted | ev.JobStopped | ev.JobTimedOut)
                       or (isinstance(e, ev.JobFailed) and not e.will_retry))
    assert set(leader.submitted) == set(leader.state.finished) == set(terminal)
    assert all(n == 1 for n in terminal.values()), "a job ended twice"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-2, 2), min_size=1, max_size=12))
def test_requeue_after_a_loss_keeps_priority_order(priorities: list[int]) -> None:
    leader = Leader()
    worker_event(leader, "register", "w2")
    for priority in priorities:
        leader.command(SubmitJob(workload="noop", priority=priority))
        leader.place()
    queued_before = [leader.state.jobs[key[2]].queue_key for key in leader.state.queue]
    worker_event(leader, "lost", "w2")  # its attempts go back to the queue
    keys = list(leader.state.queue)
    assert keys == sorted((-leader.state.jobs[k[2]].priority, leader.state.jobs[k[2]].order, k[2]) for k in keys)
    assert set(queued_before) <= set(keys) and len(keys) == len(priorities)
    worker_event(leader, "register", "w1")
    leader.place()
    first_placed = sorted(leader.active())
    expected = [key[2] for key in keys[:WORKERS["w1"]["slots"]]]
    assert sorted(j for j, _ in first_placed) == sorted(expected)
