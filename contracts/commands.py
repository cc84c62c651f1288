"""Commands: imperative requests to one service's micro endpoint, and their replies."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from contracts.base import Command, GpuCount, Id, Message, NonNegative, Positive, Priority, Retries, StatusCode
from contracts.events import Attempt, JobKind, Label, Text, WorkerCapabilities


class SubmitJob(Command, kw_only=True):
    """Queue a training or evaluation run. The same `idempotency_key` always gives the same job."""

    service: ClassVar[str] = "scheduler"
    verb: ClassVar[str] = "submit"
    kind: JobKind = "train"
    workload: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    params: dict[str, Any] = {}
    max_iterations: Positive | None = None
    episodes: Positive | None = None
    checkpoint_of: Id | None = None
    priority: Priority = 0
    gpus: GpuCount = 0
    labels: tuple[Label, ...] = ()
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)] | None = None
    max_retries: Retries = 0


class StopJob(Command, kw_only=True):
    """Stop one job (`job_id`), or every unfinished job (optionally only those of one `kind`)."""

    service: ClassVar[str] = "scheduler"
    verb: ClassVar[str] = "stop"
    job_id: Id | None = None
    kind: JobKind | None = None
    reason: Text = "requested"


class ReportJobStarted(Command, kw_only=True):
    """A worker tells the scheduler that its attempt of a job runs."""

    service: ClassVar[str] = "scheduler"
    verb: ClassVar[str] = "report"
    from_worker: ClassVar[bool] = True
    job_id: Id
    attempt: Attempt
    worker_id: Id
    resumed_from: NonNegative | None = None
    corrupt_checkpoints: tuple[str, ...] = ()


class ReportJobCheckpointed(Command, kw_only=True):
    """A worker stored a checkpoint of its attempt."""

    service: ClassVar[str] = "scheduler"
    verb: ClassVar[str] = "report"
    from_worker: ClassVar[bool] = True
    job_id: Id
    attempt: Attempt
    worker_id: Id
    iteration: NonNegative
    name: str
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    size: NonNegative


class ReportJobFinished(Command, kw_only=True):
    """A worker's attempt ended: completed, failed (with the traceback's tail) or stopped."""

    service: ClassVar[str] = "scheduler"
    verb: ClassVar[str] = "report"
    from_worker: ClassVar[bool] = True
    job_id: Id
    attempt: Attempt
    worker_id: Id
    outcome: Literal["completed", "failed", "stopped", "interrupted"]
    result: dict[str, Any] = {}
    error: Text = ""
    traceback: Text = ""
    retryable: bool = False
    crashed: bool = False  # interrupted: the worker died while it ran (its next run says so): worker_lost


class RegisterWorker(Command, kw_only=True):
    """A worker joins (or joins again: same id updates its capabilities and marks it healthy)."""

    service: ClassVar[str] = "discovery"
    verb: ClassVar[str] = "register"
    from_worker: ClassVar[bool] = True
    worker_id: Id
    capabilities: WorkerCapabilities
    draining: bool = False  # shutting down: no new jobs (docs/protocol.md, graceful shutdown)


class DeregisterWorker(Command, kw_only=True):
    """A worker leaves on purpose."""

    service: ClassVar[str] = "discovery"
    verb: ClassVar[str] = "deregister"
    from_worker: ClassVar[bool] = True
    worker_id: Id
    reason: Text = "shutdown"


JobReport = ReportJobStarted | ReportJobCheckpointed | ReportJobFinished
SchedulerCommand = SubmitJob | StopJob | JobReport
DiscoveryCommand = RegisterWorker | DeregisterWorker


class JobAccepted(Message, kw_only=True):
    """Reply to `SubmitJob`: the job's id, and whether this call created it."""

    job_id: str
    created: bool
    seq: NonNegative = 0


class JobsStopping(Message, kw_only=True):
    """Reply to `StopJob`: the jobs asked to stop."""

    job_ids: list[str]


class ReportAccepted(Message, kw_only=True):
    """Reply to a worker's report; `stop` tells the worker to stop the attempt (fenced or stopped)."""

    accepted: bool
    stop: bool = False
    reason: str = ""


class WorkerAccepted(Message, kw_only=True):
    """Reply to `RegisterWorker` / `DeregisterWorker`."""

    worker_id: str
    status: str
    seq: NonNegative = 0


class CommandError(Message, kw_only=True):
    """A typed error reply: `code` follows HTTP (400 bad input, 404 unknown, 409 conflict, 503 busy)."""

    code: StatusCode
    error: str
    message: str


COMMANDS: tuple[type[Command], ...] = (SubmitJob, StopJob, ReportJobStarted, ReportJobCheckpointed, ReportJobFinished,
                                       RegisterWorker, DeregisterWorker)


def endpoints(*, from_worker: bool) -> list[tuple[str, str]]:
    """The (service, verb) pairs that workers send (`from_worker=True`) or that others send."""
    return sorted({(c.service, c.verb) for c in COMMANDS if c.from_worker == from_worker})
