"""The scheduler's decider: commands and worker events in, job events out. Pure: no I/O, no clock.

State and `apply_in_place` live in `board`, placement in `placement`; both are re-exported here so the
decider reads as the three functions of DESIGN §4.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import msgspec

from contracts import events as ev
from contracts.base import Event, new_id
from contracts.commands import (
    AssignmentConfirmed,
    ConfirmAssignment,
    ReportAccepted,
    ReportJobCheckpointed,
    ReportJobFinished,
    ReportJobStarted,
    RestartStalledJob,
    StopJob,
    SubmitJob,
)
from contracts.dispatch import Assignment, CheckpointRef, DispatchMessage, StopAttempt
from contracts.errors import Conflict, InvalidCommand, NotFound, UnknownWorkload
from contracts.jobspec import spec_fields
from contracts.workloads import EVAL_SUFFIX, is_target, offers, refused_target
from services.scheduler.board import (
    ACTIVE_ON_WORKER,
    Finished,
    Job,
    JobBoard,
    WorkerView,
    apply_in_place,
    initial_state,
    new_job,
)
from services.scheduler.params import check_params
from services.scheduler.placement import Placement, place

__all__ = ["JobBoard", "RetryPolicy", "StaleAttempt", "apply_in_place", "confirmation", "decide", "initial_state",
           "on_worker_event", "tick"]


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Delay before retry n (0-based): `base_s * 2**n`, at most `max_s`."""

    base_s: float = 1.0
    max_s: float = 60.0

    def delay(self, retries_done: int) -> timedelta:
        """The backoff before the next retry."""
        return timedelta(seconds=min(self.max_s, self.base_s * 2 ** min(retries_done, 32)))


DEFAULT_POLICY = RetryPolicy()


class StaleAttempt(Conflict):
    """A report of an attempt that is no longer the job's current one on that worker (fenced)."""


def decide(command: object, state: JobBoard, now: datetime, *, policy: RetryPolicy = DEFAULT_POLICY,
           new_job_id: Callable[[], str] = new_id, traceparent: str = "") -> list[Event]:
    """The events one command causes; raises a DomainError when it cannot be carried out.

    `traceparent` is the trace context the command came with: a new job keeps it (JobSubmitted).
    """
    if isinstance(command, SubmitJob):
        return _submit(command, state, now, new_job_id(), traceparent)
    if isinstance(command, StopJob):
        return _stop(command, state, now)
    if isinstance(command, RestartStalledJob):
        return _restart_stalled(command, state, now)
    if isinstance(command, ReportJobStarted | ReportJobCheckpointed | ReportJobFinished):
        job = fence(command, state)
        if job is None:
            return []
        if isinstance(command, ReportJobStarted):
            return _started(command, job, now)
        if isinstance(command, ReportJobCheckpointed):
            return _checkpointed(command, job, now)
        if command.started is not None:
            return [*_started(_same_attempt(command.started, command), job, now), *_finished(command, job, now, policy)]
        return _finished(command, job, now, policy)
    raise InvalidCommand(f"the scheduler does not handle {type(command).__name__}")


def _submit(cmd: SubmitJob, state: JobBoard, now: datetime, job_id: str, traceparent: str = "") -> list[Event]:
    if cmd.idempotency_key and cmd.idempotency_key in state.idempotency:
        return []
    if cmd.kind == "eval" and not cmd.checkpoint_of:
        raise InvalidCommand("an evaluation needs checkpoint_of: the job whose checkpoint it evaluates")
    if cmd.checkpoint_of:
        _check_source(state, cmd.checkpoint_of)
    check_workload(state, cmd.workload, cmd.kind)
    if cmd.strict_params:
        check_params(state, cmd.workload, cmd.kind, cmd.params)
    if cmd.checkpoint_ref is not None:
        _check_chosen(state, cmd.checkpoint_of or "", cmd.checkpoint_ref)
    submitted = ev.JobSubmitted.from_spec(job_id, cmd.spec, idempotency_key=cmd.idempotency_key, submitted_at=now,
                                          traceparent=traceparent)
    job = new_job(submitted, state.next_order)
    mine = [p for p in place(state, now, extra=job) if p.job_id == job_id]
    return [submitted, *(assigned(p, job.attempt, now) for p in mine)]


def _check_source(state: JobBoard, source_id: str) -> None:
    source = state.jobs.get(source_id) or state.finished.get(source_id)
    if source is None:
        raise InvalidCommand(f"checkpoint_of {source_id}: no such job")
    if not source.checkpoints:
        status = source.status
        raise InvalidCommand(f"checkpoint_of {source_id}: that job ({status}) has no checkpoint yet")


def _check_chosen(state: JobBoard, source_id: str, ref: CheckpointRef) -> None:
    """A chosen checkpoint is one of the source job's (by its name); where the board still keeps it, the same."""
    if not ref.name.startswith(source_id + "/"):
        raise InvalidCommand(f"checkpoint {ref.name!r} is not one of job {source_id}'s checkpoints")
    source = state.jobs.get(source_id) or state.finished.get(source_id)
    kept = {c.name: c for c in source.checkpoints} if source is not None else {}
    if ref.name in kept and kept[ref.name].sha256 != ref.sha256:
        raise InvalidCommand(f"checkpoint {ref.name!r}: its digest is not the stored checkpoint's")


def check_workload(state: JobBoard, workload: str, kind: str) -> None:
    """Refuse a job that no registered worker (healthy or not, until forgotten) can run, or that is no workload.

    With no worker registered at all the job is queued: workers may join later.
    """
    if is_target(workload) and (why := refused_target(workload)) is not None:
        raise UnknownWorkload(why)
    workers = state.workers.values()
    if not workers or any(offers(w.workloads, w.target_modules, workload, kind) for w in workers):
        return
    raise UnknownWorkload(unoffered(workload, kind, workers))


def unoffered(workload: str, kind: str, workers: Iterable[WorkerView]) -> str:
    """Why no worker runs `workload`, listing what the registered workers do offer."""
    workers = list(workers)
    names = sorted({name for w in workers for name in w.workloads or ()})
    modules = sorted({m for w in workers for m in w.target_modules or ()})
    if any(w.target_modules is None for w in workers):
        targets = "from any module"
    else:
        targets = f"from {', '.join(modules)}" if modules else "none"
    offered = f"offered: {', '.join(names) or 'no registered workloads'}; module:function targets: {targets}"
    if is_target(workload):
        return f"no registered worker runs module:function workloads such as {workload!r} ({offered})"
    also = f" (nor {workload + EVAL_SUFFIX!r})" if kind == "eval" and not workload.endswith(EVAL_SUFFIX) else ""
    return f"unknown workload {workload!r}: no registered worker offers it{also} ({offered})"


def _stop(cmd: StopJob, state: JobBoard, now: datetime) -> list[Event]:
    if cmd.job_id is not None:
        return _stop_one(_unfinished(state, cmd.job_id), cmd.reason, now)
    chosen = sorted((j for j in state.jobs.values() if cmd.kind in (None, j.spec.kind)), key=lambda j: j.order)
    return [e for job in chosen for e in _stop_one(job, cmd.reason, now)]


def _unfinished(state: JobBoard, job_id: str) -> Job:
    """A job that has not finished; NotFound when there is none, Conflict when it has finished."""
    job = state.jobs.get(job_id)
    if job is None:
        done = state.finished.get(job_id)
        if done is None:
            raise NotFound(f"no job {job_id}")
        raise Conflict(f"job {job_id} has already finished ({done.status})")
    return job


def _stop_one(job: Job, reason: str, now: datetime) -> list[Event]:
    if job.stop_requested:
        return []
    requested = ev.JobStopRequested(job_id=job.job_id, reason=reason, requested_at=now)
    if job.status in ACTIVE_ON_WORKER:
        return [requested]  # the worker checkpoints and reports `stopped`
    return [requested, ev.JobStopped(job_id=job.job_id, attempt=job.attempt, reason=reason, stopped_at=now)]


def _restart_stalled(cmd: RestartStalledJob, state: JobBoard, now: datetime) -> list[Event]:
    """A stalled attempt goes back to the queue (attempt + 1, resuming from the last checkpoint), if still current."""
    job = _unfinished(state, cmd.job_id)
    if job.status != "running" or job.attempt != cmd.attempt or job.worker_id != cmd.worker_id:
        where = f" on {job.worker_id}" if job.worker_id else ""
        raise Conflict(f"attempt {cmd.attempt} of job {cmd.job_id} on {cmd.worker_id} is not running: the job is "
                       f"{job.status} at attempt {job.attempt}{where}")
    if job.spec.on_stall != "restart":
        raise Conflict(f"job {cmd.job_id} asked to be only alerted when stalled (on_stall = {job.spec.on_stall})")
    if job.stop_requested:
        raise Conflict(f"job {cmd.job_id} is being stopped")
    return [ev.JobRequeued(job_id=job.job_id, attempt=job.attempt + 1, reason="stalled", requeued_at=now)]


def stalled_stop(cmd: RestartStalledJob) -> StopAttempt:
    """What the stalled attempt's worker hears once its requeue is on the log: end that attempt."""
    return StopAttempt(job_id=cmd.job_id, attempt=cmd.attempt, worker_id=cmd.worker_id, reason="stalled")


def fence(report: ReportJobStarted | ReportJobCheckpointed | ReportJobFinished, state: JobBoard) -> Job | None:
    """The job a report may change; None for a repeat about a finished job; raises StaleAttempt otherwise."""
    job = state.jobs.get(report.job_id)
    if job is not None and job.status in ACTIVE_ON_WORKER and job.attempt == report.attempt \
            and job.worker_id == report.worker_id:
        return job
    done = state.finished.get(report.job_id)
    if done is not None and done.attempt == report.attempt and done.worker_id == report.worker_id:
        return None
    if job is None and done is None:
        raise StaleAttempt(f"no job {report.job_id}")
    current = job or done
    raise StaleAttempt(f"attempt {report.attempt} on {report.worker_id} is stale: job {report.job_id} is at "
                       f"attempt {current.attempt} on {current.worker_id or 'no worker'}")


def confirmation(command: ConfirmAssignment, state: JobBoard) -> AssignmentConfirmed:
    """May a worker run an assignment it got? Only the job's current attempt, assigned to it and not begun.

    A running attempt is refused too: its worker confirmed it once already, so a second copy is forged
    or left over. A job asked to stop is confirmed with `stop`: its worker reports it stopped unrun.
    """
    job_id, attempt, worker_id = command.job_id, command.attempt, command.worker_id
    job = state.jobs.get(job_id)
    if job is None:
        done = state.finished.get(job_id)
        reason = f"no job {job_id}" if done is None else f"job {job_id} has already finished ({done.status})"
        return AssignmentConfirmed(confirmed=False, reason=reason)
    if job.status != "assigned" or job.attempt != attempt or job.worker_id != worker_id:
        where = f" on {job.worker_id}" if job.worker_id else ""
        return AssignmentConfirmed(confirmed=False, reason=f"attempt {attempt} of job {job_id} is not assigned to "
                                   f"{worker_id}: the job is {job.status} at attempt {job.attempt}{where}")
    if job.stop_requested:
        return AssignmentConfirmed(confirmed=True, stop=True, reason=job.stop_reason or "requested")
    return AssignmentConfirmed(confirmed=True, assignment=assignment_for(state, job))


def _same_attempt(started: ReportJobStarted, finished: ReportJobFinished) -> ReportJobStarted:
    if (started.job_id, started.attempt, started.worker_id) != (finished.job_id, finished.attempt, finished.worker_id):
        raise InvalidCommand("a finished report's start must name the same job, attempt and worker")
    return started


def started_at(cmd: ReportJobStarted, job: Job, now: datetime) -> datetime:
    """When the attempt's process started: `running_for_s` before now, but not before it was assigned."""
    at = now - timedelta(seconds=cmd.running_for_s)
    assigned = job.assigned_at or job.submitted_at
    return max(at, assigned) if assigned is not None and assigned <= now else now


def _started(cmd: ReportJobStarted, job: Job, now: datetime) -> list[Event]:
    if job.status == "running":
        return []
    return [ev.JobStarted(job_id=job.job_id, attempt=cmd.attempt, worker_id=cmd.worker_id,
                          resumed_from=cmd.resumed_from, corrupt_checkpoints=cmd.corrupt_checkpoints,
                          started_at=started_at(cmd, job, now))]


def _checkpointed(cmd: ReportJobCheckpointed, job: Job, now: datetime) -> list[Event]:
    if any(c.name == cmd.name for c in job.checkpoints):
        return []
    return [ev.JobCheckpointed(job_id=job.job_id, attempt=cmd.attempt, iteration=cmd.iteration, name=cmd.name,
                               sha256=cmd.sha256, size=cmd.size, checkpointed_at=now)]


def _finished(cmd: ReportJobFinished, job: Job, now: datetime, policy: RetryPolicy) -> list[Event]:
    job_id, attempt = job.job_id, cmd.attempt
    if cmd.outcome == "completed":
        return [ev.JobCompleted(job_id=job_id, attempt=attempt, result=cmd.result, completed_at=now)]
    if cmd.outcome == "stopped" or (cmd.outcome == "interrupted" and job.stop_requested):
        reason = job.stop_reason or cmd.error or "stopped by the worker"
        return [ev.JobStopped(job_id=job_id, attempt=attempt, reason=reason, stopped_at=now)]
    if cmd.outcome == "interrupted":
        reason = "worker_lost" if cmd.crashed else "shutdown"
        return [ev.JobRequeued(job_id=job_id, attempt=attempt + 1, reason=reason, requeued_at=now)]
    retry = cmd.retryable and job.retries < job.spec.max_retries and not job.stop_requested
    failed = ev.JobFailed(job_id=job_id, attempt=attempt, error=cmd.error or "failed", traceback=cmd.traceback,
                          retryable=cmd.retryable, will_retry=retry, failed_at=now)
    if not retry:
        return [failed]
    return [failed, ev.JobRequeued(job_id=job_id, attempt=attempt + 1, reason="retry",
                                   not_before=now + policy.delay(job.retries), requeued_at=now)]


def report_reply(report: ReportJobStarted | ReportJobCheckpointed | ReportJobFinished,
                 state: JobBoard) -> ReportAccepted:
    """The reply to an accepted report, read from the board after its events: should the attempt stop?"""
    job = state.jobs.get(report.job_id)
    if job is not None:
        return ReportAccepted(accepted=True, stop=job.stop_requested, reason=job.stop_reason)
    done = state.finished.get(report.job_id)
    status = done.status if done else "gone"
    ended = isinstance(report, ReportJobFinished)
    return ReportAccepted(accepted=True, stop=not ended, reason="" if ended else f"job already {status}")


def assigned(placement: Placement, attempt: int, now: datetime) -> ev.JobAssigned:
    """The event recording one placement."""
    return ev.JobAssigned(job_id=placement.job_id, attempt=attempt, worker_id=placement.worker_id,
                          slot=placement.slot, gpu_indices=placement.gpu_indices, assigned_at=now)


def assign(state: JobBoard, now: datetime) -> list[Event]:
    """A placement pass: one `JobAssigned` per queued job that fits somewhere now."""
    return [assigned(p, state.jobs[p.job_id].attempt, now) for p in place(state, now)]


def on_worker_event(state: JobBoard, event: Event, now: datetime) -> list[Event]:
    """Reaction to a worker event: a lost, departed or forgotten worker's attempts go back to the queue."""
    if isinstance(event, ev.WorkerLost | ev.WorkerForgotten):
        return requeue_worker(state, event.worker_id, "worker_lost", now)
    if isinstance(event, ev.WorkerDeregistered):
        return requeue_worker(state, event.worker_id, "worker_left", now)
    return []


def requeue_worker(state: JobBoard, worker_id: str, reason: str, now: datetime) -> list[Event]:
    """Requeue (attempt + 1) every active attempt on one worker; jobs asked to stop just stop."""
    out: list[Event] = []
    for job_id in state.running.get(worker_id, ()):
        job = state.jobs[job_id]
        if job.stop_requested:
            out.append(ev.JobStopped(job_id=job_id, attempt=job.attempt, reason=job.stop_reason, stopped_at=now))
        else:
            out.append(ev.JobRequeued(job_id=job_id, attempt=job.attempt + 1, reason=reason, requeued_at=now))
    return out


def tick(state: JobBoard, now: datetime) -> list[Event]:
    """Time passing: timeouts end jobs; attempts left on lost, departed or unknown workers are requeued.

    A draining worker keeps its attempts: they end on their own (checkpointed, `interrupted`).
    """
    out: list[Event] = [ev.JobTimedOut(job_id=job.job_id, attempt=job.attempt, timed_out_at=now)
                        for job in state.jobs.values()
                        if job.status == "running" and job.deadline is not None and job.deadline <= now]
    timed_out = {e.job_id for e in out}
    for worker_id in list(state.running):
        worker = state.workers.get(worker_id)
        if worker is None or worker.health != "healthy":
            reason = "worker_left" if worker is not None and worker.health == "left" else "worker_lost"
            out.extend(e for e in requeue_worker(state, worker_id, reason, now) if e.job_id not in timed_out)
    return out


def atomic_groups(events: Iterable[Event]) -> list[list[Event]]:
    """Split a decision into appends: one event each, except a failure that is retried goes with its requeue."""
    groups: list[list[Event]] = []
    for event in events:
        if groups and isinstance(event, ev.JobRequeued) and event.reason == "retry" \
                and isinstance(groups[-1][-1], ev.JobFailed) and groups[-1][-1].will_retry:
            groups[-1].append(event)
        else:
            groups.append([event])
    return groups


def dispatch_for(state: JobBoard, event: Event) -> DispatchMessage | None:
    """What a worker must hear because of `event` (read from the board after evolving it), if anything."""
    if isinstance(event, ev.JobAssigned):
        job = state.jobs.get(event.job_id)
        return assignment_for(state, job) if job is not None and job.attempt == event.attempt else None
    if isinstance(event, ev.JobStopRequested):
        job = state.jobs.get(event.job_id)
        if job is not None and job.status in ACTIVE_ON_WORKER and job.worker_id:
            return StopAttempt(job_id=job.job_id, attempt=job.attempt, worker_id=job.worker_id, reason=event.reason)
    if isinstance(event, ev.JobTimedOut):
        done = state.finished.get(event.job_id)
        if done is not None and done.worker_id:
            return StopAttempt(job_id=event.job_id, attempt=event.attempt, worker_id=done.worker_id, reason="timeout")
    return None


def assignment_for(state: JobBoard, job: Job) -> Assignment:
    """The message that hands a job's current attempt to its worker, with the checkpoints to resume from."""
    checkpoints = list(job.checkpoints)
    if job.spec.checkpoint_ref is not None:  # an evaluation of one chosen checkpoint: that one only
        checkpoints.append(job.spec.checkpoint_ref)
    elif of := job.spec.checkpoint_of:
        source: Job | Finished | None = state.jobs.get(of) or state.finished.get(of)
        if source is not None:
            checkpoints.extend(source.checkpoints)
    return Assignment(**spec_fields(job.spec), job_id=job.job_id, attempt=job.attempt, worker_id=job.worker_id or "",
                      slot=job.slot, gpu_indices=job.gpu_indices, checkpoints=tuple(checkpoints),
                      assigned_at=job.assigned_at or job.submitted_at)


def unstarted_assignments(state: JobBoard) -> list[Assignment]:
    """Assignments of jobs assigned but not started: re-published when a scheduler takes the lease."""
    return [assignment_for(state, job) for job in state.jobs.values() if job.status == "assigned"]
