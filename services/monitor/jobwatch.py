"""What the monitor knows of each running job, read from its events, and when a stalled one is due a restart. Pure.

A job's spec says how long it may go without progress (`stall_after_s`, else `[monitor] stall_after_s`),
whether a stall only alerts or also restarts it (`on_stall`), and how many GPUs it asked for; its latest
`JobAssigned` says which attempt runs where, on which GPUs. A job with `on_stall = "restart"` still
stalled one more stall period after its `JobStalled` is due a restart: the scheduler requeues the
attempt (the monitor only asks), the stall resolves as `restarted` and the new attempt's clock starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

import msgspec

from contracts import events as ev
from contracts.base import Event
from services.monitor.domain import STALL_RULE, AlertBoard, JobOnHost, OpenAlert, RunningJob


class JobFacts(msgspec.Struct, frozen=True, kw_only=True):
    """One job as the monitor's rules need it."""

    job_id: str
    gpus: int = 0
    stall_after_s: float | None = None
    on_stall: str = "alert"
    attempt: int = 1
    worker_id: str | None = None
    gpu_indices: tuple[int, ...] = ()


def job_facts(job_id: str, events: Iterable[Event]) -> JobFacts | None:
    """The fold of one job's events into its facts; None without its `JobSubmitted`."""
    facts: JobFacts | None = None
    for event in events:
        if isinstance(event, ev.JobSubmitted):
            facts = JobFacts(job_id=job_id, gpus=event.gpus, stall_after_s=event.stall_after_s,
                             on_stall=event.on_stall)
        elif facts is not None and isinstance(event, ev.JobAssigned):
            facts = msgspec.structs.replace(facts, attempt=event.attempt, worker_id=event.worker_id,
                                            gpu_indices=event.gpu_indices)
        elif facts is not None and isinstance(event, ev.JobRequeued):
            facts = msgspec.structs.replace(facts, attempt=event.attempt, worker_id=None, gpu_indices=())
    return facts


def stall_periods(facts: Mapping[str, JobFacts]) -> dict[str, float]:
    """Each job's own stall period, where it set one."""
    return {j: f.stall_after_s for j, f in facts.items() if f.stall_after_s is not None}


def jobs_on(host: str, running: Mapping[str, RunningJob], facts: Mapping[str, JobFacts],
            pids: Mapping[str, int]) -> list[JobOnHost]:
    """The jobs running on one host (a worker's id is its host's), as the GPU rules see them."""
    out = []
    for job_id, job in sorted(running.items()):
        if job.worker_id != host:
            continue
        known = facts.get(job_id)
        out.append(JobOnHost(job_id=job_id, gpus=known.gpus if known else 0,
                             gpu_indices=known.gpu_indices if known else (), pid=pids.get(job_id)))
    return out


def due_restarts(board: AlertBoard, running: Mapping[str, RunningJob], facts: Mapping[str, JobFacts],
                 now: datetime, stall_after_s: float, asked: Mapping[str, datetime]) -> list[OpenAlert]:
    """Open stalls of running jobs that chose a restart, one more stall period after the alert (and after the
    last time it was asked for, when the scheduler refused)."""
    out = []
    for opened in sorted(board.open.values(), key=lambda a: a.raised_at):
        known = facts.get(opened.target)
        if opened.rule != STALL_RULE or opened.target not in running or known is None or known.on_stall != "restart":
            continue
        period = timedelta(seconds=known.stall_after_s or stall_after_s)
        if now - opened.raised_at >= period and now - asked.get(opened.alert_id, opened.raised_at) >= period:
            out.append(opened)
    return out


def track_running(running: Mapping[str, RunningJob], worker_id: str, job_ids: Iterable[str],
                  now: datetime) -> dict[str, RunningJob]:
    """Running jobs after a worker's heartbeat: its jobs are exactly `job_ids` (new ones running since `now`)."""
    job_ids = set(job_ids)
    out = {j: r for j, r in running.items() if r.worker_id != worker_id or j in job_ids}
    for job_id in job_ids:
        if job_id not in out or out[job_id].worker_id != worker_id:
            out[job_id] = RunningJob(worker_id=worker_id, since=now)
    return out


def forget_silent_workers(running: Mapping[str, RunningJob], heard: Mapping[str, datetime], now: datetime,
                          missing_after_s: float) -> dict[str, RunningJob]:
    """Running jobs without those of workers unheard for `missing_after_s` (nobody says they still run)."""
    limit = timedelta(seconds=missing_after_s)
    return {j: r for j, r in running.items() if r.worker_id in heard and now - heard[r.worker_id] < limit}
