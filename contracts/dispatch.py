"""What the scheduler hands one worker on `stoker.dispatch.<worker_id>`: assignments and stops."""

from __future__ import annotations

from datetime import datetime

from contracts.base import Id, Message, SmallNonNegative
from contracts.events import Attempt
from contracts.jobspec import CheckpointRef, JobSpec

__all__ = ["Assignment", "CheckpointRef", "DispatchMessage", "StopAttempt"]


class Assignment(JobSpec, tag_field="type", tag=True, kw_only=True):
    """Run attempt `attempt` of a job; `checkpoints` lists stored checkpoints to resume from, newest first.

    The job's spec travels flat: the fields of `JobSpec` (contracts/jobspec.py), then the attempt's own.
    """

    job_id: Id
    attempt: Attempt
    worker_id: Id
    slot: SmallNonNegative = 0
    gpu_indices: tuple[SmallNonNegative, ...] = ()
    checkpoints: tuple[CheckpointRef, ...] = ()
    assigned_at: datetime


class StopAttempt(Message, tag_field="type", tag=True, kw_only=True):
    """Stop a running attempt: checkpoint and end (SIGTERM, then SIGKILL after the grace period)."""

    job_id: Id
    attempt: Attempt
    worker_id: Id
    reason: str = "requested"


DispatchMessage = Assignment | StopAttempt
