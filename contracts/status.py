"""A job's status, in the one vocabulary every part uses: the read model, the API, the CLI, the scheduler."""

from __future__ import annotations

from typing import Literal, get_args

from contracts import events as ev

JobStatus = Literal["queued", "assigned", "running", "stopping", "completed", "failed", "stopped", "timed_out"]
FinalStatus = Literal["completed", "failed", "stopped", "timed_out"]

JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
FINAL_STATUSES: tuple[FinalStatus, ...] = get_args(FinalStatus)
UNFINISHED_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JOB_STATUSES if s not in FINAL_STATUSES)
ON_WORKER_STATUSES: tuple[JobStatus, ...] = ("assigned", "running", "stopping")  # a worker holds the job


def is_final(status: str) -> bool:
    """Whether a job in this status is over for good (nothing moves it on again)."""
    return status in FINAL_STATUSES


def final_status(event: object) -> FinalStatus | None:
    """The status an event ends its job in; None when the job goes on (a failure that will be retried)."""
    if isinstance(event, ev.JobFailed):
        return None if event.will_retry else "failed"
    return _ENDINGS.get(type(event))


_ENDINGS: dict[type, FinalStatus] = {ev.JobCompleted: "completed", ev.JobStopped: "stopped",
                                     ev.JobTimedOut: "timed_out"}
