"""Bodies of /api/v1/jobs: submitting, listing, one job, its timeline, progress and checkpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec

from contracts.base import GpuCount, Priority, Retries, SmallNonNegative
from contracts.jobspec import PARAMS_VERSION, JobKind, JobSpec, Label
from contracts.status import JobStatus
from gateway.schemas.common import Body, Episodes, Id, Iterations, Params, Reply, Seq, Workload


# SubmitJobBody and JobView are JobSpecs (contracts/jobspec.py): the body narrows most of its fields to what
# the API accepts, the view adds where the job stands. A field added to JobSpec shows in both.
class SubmitJobBody(Body, JobSpec, kw_only=True, forbid_unknown_fields=True):
    """A training or evaluation run to queue; the same `idempotency_key` always gives the same job."""

    kind: JobKind = "train"
    workload: Workload
    params: Params = {}
    max_iterations: Iterations | None = None
    episodes: Episodes | None = None
    checkpoint_of: Id | None = None
    priority: Priority = 0
    gpus: GpuCount = 0
    labels: Annotated[tuple[Label, ...], msgspec.Meta(max_length=32)] = ()
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)] | None = None
    max_retries: Retries = 0
    stall_after_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86400)] | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    params_version: SmallNonNegative = PARAMS_VERSION
    strict_params: bool = True  # false: params the workload does not declare (or ill-typed) pass unchecked


class RowProgress(Reply, kw_only=True):
    """Where a running job stands: its newest progress report (so a list needs no status call per row)."""

    iteration: int
    total: int | None
    progress_percent: float | None
    loss: float | None
    at: datetime


class JobView(Reply, JobSpec, kw_only=True):
    """One job as the read model (or, while the projector catches up, the log) knows it."""

    id: str
    status: JobStatus
    attempt: int
    worker_id: str | None
    idempotency_key: str | None
    submitted_at: datetime
    assigned_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    stop_requested: bool
    resumed_from: int | None
    last_checkpoint: str | None
    last_checkpoint_iteration: int | None
    checkpoints: int
    requeues: int
    error: str | None
    result: dict[str, Any] | None
    updated_seq: int
    trace_id: str | None = None  # the submission's trace: look it up in your OpenTelemetry backend
    progress: RowProgress | None = None  # a running (or stopping) job's newest progress report


class JobPage(Reply, kw_only=True):
    """A page of jobs, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[JobView]
    next_cursor: str | None = None


class TimelineEntry(Reply, kw_only=True):
    """One event of a job, with its place in the log."""

    seq: int
    time: datetime | None
    type: str
    event: dict[str, Any]


class JobTimeline(Reply, kw_only=True):
    """Every event of one job, oldest first."""

    job_id: str
    events: list[TimelineEntry]


class ProgressSample(Reply, kw_only=True):
    """One progress report of a job attempt (`seq` is its telemetry sequence)."""

    seq: int
    attempt: int
    worker_id: str
    iteration: int
    total: int | None
    loss: float | None
    metrics: dict[str, float]
    at: datetime


class ProgressHistory(Reply, kw_only=True):
    """Progress samples oldest first; ask again with `since=next_since` for newer ones."""

    job_id: str
    samples: list[ProgressSample]
    next_since: Seq


class EpisodeSample(Reply, kw_only=True):
    """One episode report of an evaluation attempt (`seq` is its telemetry sequence)."""

    seq: int
    attempt: int
    episode: int
    score: float
    figures: dict[str, float]
    log: list[dict[str, Any]]
    at: datetime


class EpisodeHistory(Reply, kw_only=True):
    """Episode reports oldest first; ask again with `since=next_since` for newer ones."""

    job_id: str
    episodes: list[EpisodeSample]
    next_since: Seq


class CheckpointView(Reply, kw_only=True):
    """A stored checkpoint of a job (in the object store under `name`)."""

    seq: int
    attempt: int
    iteration: int
    name: str
    sha256: str
    size: int
    checkpointed_at: datetime


class JobCheckpoints(Reply, kw_only=True):
    """A job's checkpoints, oldest first."""

    job_id: str
    checkpoints: list[CheckpointView]


class StopResult(Reply, kw_only=True):
    """The jobs asked to stop."""

    job_ids: list[str]
