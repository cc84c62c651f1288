"""Commands: imperative requests to one service's micro endpoint, and their replies."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from contracts.base import Command, GpuCount, Id, Message, NonNegative, Priority, Retries, SmallNonNegative, StatusCode
from contracts.dispatch import Assignment
from contracts.events import Attempt, JobKind, Text, WorkerCapabilities
from contracts.jobspec import PARAMS_VERSION, JobSpec


class SubmitJob(Command, JobSpec, kw_only=True):
    """Queue a training or evaluation run. The same `idempotency_key` always gives the same job.

    Its fields are `JobSpec`'s, some narrowed to policy bounds here, and the `idempotency_key`.
    """

    service: ClassVar[str] = "scheduler"
    verb: ClassVar[str] = "submit"
    kind: JobKind = "train"
    priority: Priority = 0
    gpus: GpuCount = 0
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=366 * 86400)] | None = None
    max_retries: Retries = 0
    stall_after_s: Annotated[float, msgspec.Meta(gt=0, le=30 * 86400)] | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    # -- declared parameters --
    params_version: SmallNonNegative = PARAMS_VERSION  # a submission now names params as workloads declare them
    strict_params: bool = True  # False: params the workload does not declare (or ill-typed) pass unchecked


class StopJob(Command, kw_only=True):
    """Stop one job (`job_id`), or every unfinished job (optionally only those of one `kind`)."""

    service: ClassVar[str] = "scheduler"
    verb: ClassVar[str] = "stop"
    job_id: Id | None = None
    kind: JobKind | None = None
    reason: Text = "requested"


class ConfirmAssignment(Command, kw_only=True):
    """A worker asks whether an assignment it got is its own, before anything of the job is loaded (fencing)."""

    service: ClassVar[str] = "scheduler"
    verb: ClassVar[str] = "confirm"
    from_worker: ClassVar[bool] = True
    job_id: Id
    attempt: Attempt
    worker_id: Id


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
    # How long the attempt's process had been running when this was sent (its start is reported a moment
    # late, or with the end: ReportJobFinished.started); a duration, so the machines' clocks need not agree.
    running_for_s: Annotated[float, msgspec.Meta(ge=0, le=366 * 86400)] = 0.0


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
    # The attempt ended before its start was reported: the start travels with the end (one request for a
    # short job instead of two); the same job, attempt and worker.
    started: ReportJobStarted | None = None


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


class ClaimJoinToken(Command, kw_only=True):
    """A new machine joins with a join token: it becomes worker `worker_id`, connecting with `worker_key` from now.

    Sent with the token's own credential, which may do nothing else; the reply is `JoinClaimed`.
    """

    service: ClassVar[str] = "join"
    verb: ClassVar[str] = "claim"
    speaker: ClassVar[str] = "token_id"  # sent on `…join.claim.<token_id>`, all its credential may publish to
    token_id: Id
    worker_id: Id
    worker_key: Annotated[str, msgspec.Meta(pattern=r"^U[A-Z2-7]{55}$")]
    hostname: Annotated[str, msgspec.Meta(max_length=255)] = ""


# -- the monitor's one command (issue 12: a stalled job with `on_stall = "restart"`) ---------------------

class RestartStalledJob(Command, kw_only=True):
    """The monitor asks the scheduler to restart a stalled attempt from the job's last checkpoint.

    Only the scheduler writes `job.*`; the monitor may send this command and no other. The scheduler
    requeues the attempt only while it is still the job's current one on `worker_id` (`Conflict` otherwise).
    """

    service: ClassVar[str] = "scheduler"
    verb: ClassVar[str] = "restart"
    job_id: Id
    attempt: Attempt
    worker_id: Id
    alert_id: Id  # the JobStalled that asked for it


class StalledJobRestarted(Message, kw_only=True):
    """Reply to `RestartStalledJob`: the attempt that will run next (from the last checkpoint)."""

    job_id: Id
    attempt: Attempt


# -- end of the monitor's command ----------------------------------------------------------------------

JobReport = ReportJobStarted | ReportJobCheckpointed | ReportJobFinished
SchedulerCommand = SubmitJob | StopJob | ConfirmAssignment | JobReport | RestartStalledJob
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


class AssignmentConfirmed(Message, kw_only=True):
    """Reply to `ConfirmAssignment`. Confirmed: run `assignment`, the scheduler's own copy (or, with `stop`,
    report the attempt stopped and run nothing). Not confirmed: run nothing and report nothing."""

    confirmed: bool
    stop: bool = False
    reason: str = ""
    assignment: Assignment | None = None


class WorkerAccepted(Message, kw_only=True):
    """Reply to `RegisterWorker` / `DeregisterWorker`."""

    worker_id: str
    status: str
    seq: NonNegative = 0


class JoinClaimed(Message, kw_only=True):
    """Reply to `ClaimJoinToken`: the machine may now connect as its worker, with these labels."""

    worker_id: str
    labels: list[str] = []


class CommandError(Message, kw_only=True):
    """A typed error reply: `code` follows HTTP (400 bad input, 404 unknown, 409 conflict, 503 busy)."""

    code: StatusCode
    error: str
    message: str


COMMANDS: tuple[type[Command], ...] = (SubmitJob, StopJob, ConfirmAssignment, ReportJobStarted, ReportJobCheckpointed,
                                       ReportJobFinished, RegisterWorker, DeregisterWorker, ClaimJoinToken,
                                       RestartStalledJob)


def endpoints(*, from_worker: bool) -> list[tuple[str, str]]:
    """The (service, verb) pairs that workers send (`from_worker=True`) or that others send."""
    return sorted({(c.service, c.verb) for c in COMMANDS if c.from_worker == from_worker})
