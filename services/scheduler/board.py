"""The scheduler's state (the job board) and `apply_in_place`: how each job and worker event changes it.

Unlike discovery's pure `evolve`, `apply_in_place` changes the board it is given (and returns it):
the board holds every live job, and copying it per event would make each decision O(jobs). The
leader keeps one live board (services/scheduler/live.py) and applies its decisions at once, before
they are on the log. `decide` and `place` never mutate it.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from datetime import datetime, timedelta
from typing import Any

import msgspec

from contracts import events as ev
from contracts.base import Event
from contracts.dispatch import CheckpointRef
from contracts.jobspec import JobSpec
from contracts.status import FinalStatus, final_status

ACTIVE_ON_WORKER = ("assigned", "running")
KEEP_CHECKPOINTS = 10  # newest checkpoints kept per job: enough to skip a corrupt one or two
RETAIN_FINISHED = 50_000  # finished jobs remembered (idempotency keys, late reports, checkpoint_of)


class Job(msgspec.Struct, kw_only=True):
    """A job that has not finished: queued, assigned, running, or between a failure and its retry."""

    job_id: str
    spec: JobSpec  # what was asked for; never changes
    idempotency_key: str | None = None
    order: int = 0  # submission order: FIFO within a priority, kept across requeues
    submitted_at: datetime
    status: str = "queued"  # queued | assigned | running | retrying
    attempt: int = 1
    worker_id: str | None = None
    slot: int = 0
    gpu_indices: tuple[int, ...] = ()
    assigned_at: datetime | None = None
    checkpoints: list[CheckpointRef] = []  # newest first
    retries: int = 0
    not_before: datetime | None = None
    stop_requested: bool = False
    stop_reason: str = ""
    deadline: datetime | None = None
    version: int = 0  # stream sequence of the job's last event
    traceparent: str = ""  # the submission's trace context: its dispatch messages continue that trace

    @property
    def queue_key(self) -> tuple[int, int, str]:
        """Where the job sits in the queue: priority first, then submission order."""
        return (-self.spec.priority, self.order, self.job_id)


class Finished(msgspec.Struct, kw_only=True):
    """What is kept of a finished job: enough to answer late reports, stops and `checkpoint_of`."""

    status: FinalStatus
    attempt: int
    worker_id: str | None
    idempotency_key: str | None = None
    checkpoints: tuple[CheckpointRef, ...] = ()


class WorkerView(msgspec.Struct, kw_only=True):
    """A worker as the scheduler sees it."""

    health: str  # healthy | lost | left
    draining: bool = False  # shutting down: it keeps the jobs it runs (they end on their own) and takes no new ones
    slots: int
    gpus: tuple[int, ...] = ()
    labels: tuple[str, ...] = ()
    workloads: tuple[str, ...] | None = None  # registered names it runs; None: it did not say
    target_modules: tuple[str, ...] | None = None  # packages it runs module:function targets from; None: any
    workload_params: dict[str, str] | None = None  # name -> the digest of its params' schema (in param_schemas)


class JobBoard(msgspec.Struct, kw_only=True):
    """The fold of the job and worker events."""

    jobs: dict[str, Job] = {}
    finished: dict[str, Finished] = {}  # in finishing order; the oldest go first past RETAIN_FINISHED
    workers: dict[str, WorkerView] = {}
    running: dict[str, list[str]] = {}  # worker id -> its assigned or running jobs
    queue: list[tuple[int, int, str]] = []  # queue keys of queued jobs, sorted
    idempotency: dict[str, str] = {}
    next_order: int = 0
    last_worker: str = ""  # the worker that got the last assignment (round robin)
    # Declared parameter schemas by the SHA-256 of their canonical JSON: a fleet offers a few distinct ones,
    # so a submission is checked once per distinct schema, not once per worker.
    param_schemas: dict[str, dict[str, Any]] = {}


def initial_state() -> JobBoard:
    """An empty board."""
    return JobBoard()


def new_job(e: ev.JobSubmitted, order: int) -> Job:
    """The queued job a `JobSubmitted` describes."""
    return Job(job_id=e.job_id, spec=e.spec, idempotency_key=e.idempotency_key, order=order,
               submitted_at=e.submitted_at, traceparent=e.traceparent)


def apply_in_place(state: JobBoard, event: Event) -> JobBoard:
    """Apply one event to the board (in place) and return it; unknown or late events change nothing."""
    handler = _HANDLERS.get(type(event))
    if handler is not None:
        handler(state, event)
    return state


def record_version(state: JobBoard, aggregate: str, aggregate_id: str, seq: int) -> None:
    """Remember the stream sequence of a job's latest event (its version for the next append)."""
    if aggregate == "job":
        job = state.jobs.get(aggregate_id)
        if job is not None and seq > job.version:
            job.version = seq


def _enqueue(state: JobBoard, job: Job) -> None:
    insort(state.queue, job.queue_key)


def _dequeue(state: JobBoard, job: Job) -> None:
    key = job.queue_key
    index = bisect_left(state.queue, key)
    if index < len(state.queue) and state.queue[index] == key:
        del state.queue[index]


def _release(state: JobBoard, job: Job) -> None:
    if job.worker_id is None:
        return
    held = state.running.get(job.worker_id)
    if held and job.job_id in held:
        held.remove(job.job_id)
        if not held:
            del state.running[job.worker_id]


def _finish(state: JobBoard, job_id: str, status: FinalStatus) -> None:
    job = state.jobs.pop(job_id, None)
    if job is None:
        return
    _release(state, job)
    _dequeue(state, job)
    state.finished[job_id] = Finished(status=status, attempt=job.attempt, worker_id=job.worker_id,
                                      idempotency_key=job.idempotency_key, checkpoints=tuple(job.checkpoints))
    while len(state.finished) > RETAIN_FINISHED:
        old_id = next(iter(state.finished))
        old = state.finished.pop(old_id)
        if old.idempotency_key and state.idempotency.get(old.idempotency_key) == old_id:
            del state.idempotency[old.idempotency_key]


def _submitted(state: JobBoard, e: ev.JobSubmitted) -> None:
    if e.job_id in state.jobs or e.job_id in state.finished:
        return
    job = state.jobs[e.job_id] = new_job(e, state.next_order)
    state.next_order += 1
    if e.idempotency_key:
        state.idempotency[e.idempotency_key] = e.job_id
    _enqueue(state, job)


def _assigned(state: JobBoard, e: ev.JobAssigned) -> None:
    job = state.jobs.get(e.job_id)
    if job is None:
        return
    _release(state, job)
    _dequeue(state, job)
    job.status, job.attempt, job.worker_id = "assigned", e.attempt, e.worker_id
    job.slot, job.gpu_indices, job.not_before, job.deadline = e.slot, e.gpu_indices, None, None
    job.assigned_at = e.assigned_at
    state.running.setdefault(e.worker_id, []).append(e.job_id)
    state.last_worker = e.worker_id


def _started(state: JobBoard, e: ev.JobStarted) -> None:
    job = state.jobs.get(e.job_id)
    if job is None or job.attempt != e.attempt:
        return
    job.status = "running"
    timeout_s = job.spec.timeout_s
    job.deadline = e.started_at + timedelta(seconds=timeout_s) if timeout_s else None


def _checkpointed(state: JobBoard, e: ev.JobCheckpointed) -> None:
    job = state.jobs.get(e.job_id)
    if job is None:
        return
    job.checkpoints.insert(0, CheckpointRef(name=e.name, sha256=e.sha256, size=e.size, iteration=e.iteration))
    del job.checkpoints[KEEP_CHECKPOINTS:]


def _ended(state: JobBoard, e: ev.JobCompleted | ev.JobFailed | ev.JobStopped | ev.JobTimedOut) -> None:
    status = final_status(e)
    if status is not None:
        _finish(state, e.job_id, status)
    elif (job := state.jobs.get(e.job_id)) is not None:
        # A failure that will be retried: a JobRequeued follows in the same append; until then the job
        # holds no slot and is not queued.
        _release(state, job)
        job.status = "retrying"


def _stop_requested(state: JobBoard, e: ev.JobStopRequested) -> None:
    job = state.jobs.get(e.job_id)
    if job is not None:
        job.stop_requested, job.stop_reason = True, e.reason


def _requeued(state: JobBoard, e: ev.JobRequeued) -> None:
    job = state.jobs.get(e.job_id)
    if job is None:
        return
    _release(state, job)
    _dequeue(state, job)
    job.status, job.attempt, job.worker_id, job.slot, job.gpu_indices = "queued", e.attempt, None, 0, ()
    job.not_before, job.deadline, job.assigned_at = e.not_before, None, None
    if e.reason == "retry":
        job.retries += 1
    _enqueue(state, job)


def _worker_registered(state: JobBoard, e: ev.WorkerRegistered) -> None:
    c = e.capabilities
    state.workers[e.worker_id] = WorkerView(health="healthy", draining=e.draining, slots=c.slots,
                                            gpus=tuple(g.index for g in c.gpus), labels=c.labels,
                                            workloads=c.workloads, target_modules=c.target_modules,
                                            workload_params=_schema_digests(state, c.workload_params))


def _schema_digests(state: JobBoard, schemas: dict[str, dict[str, Any]] | None) -> dict[str, str] | None:
    """Each workload's schema kept once in `state.param_schemas`, by digest."""
    if schemas is None:
        return None
    out = {}
    for name, schema in schemas.items():
        digest = hashlib.sha256(msgspec.json.encode(schema, order="sorted")).hexdigest()
        out[name] = digest
        state.param_schemas.setdefault(digest, schema)
    return out


def _worker_health(health: str):
    def apply(state: JobBoard, e: ev.WorkerEvent) -> None:
        worker = state.workers.get(e.worker_id)
        if worker is not None:
            worker.health = health
    return apply


def _worker_forgotten(state: JobBoard, e: ev.WorkerForgotten) -> None:
    state.workers.pop(e.worker_id, None)


_HANDLERS: dict[type, Any] = {
    ev.JobSubmitted: _submitted,
    ev.JobAssigned: _assigned,
    ev.JobStarted: _started,
    ev.JobCheckpointed: _checkpointed,
    ev.JobCompleted: _ended,
    ev.JobFailed: _ended,
    ev.JobStopRequested: _stop_requested,
    ev.JobStopped: _ended,
    ev.JobRequeued: _requeued,
    ev.JobTimedOut: _ended,
    ev.WorkerRegistered: _worker_registered,
    ev.WorkerLost: _worker_health("lost"),
    ev.WorkerReturned: _worker_health("healthy"),
    ev.WorkerDeregistered: _worker_health("left"),
    ev.WorkerForgotten: _worker_forgotten,
}
