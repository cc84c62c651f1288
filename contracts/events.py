"""Events: facts in the past tense, stored in the STOKER_EVENTS stream, the source of truth."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

import msgspec

from contracts.base import (
    Event,
    Id,
    Message,
    NonNegative,
    Positive,
    SmallInt,
    SmallNonNegative,
    SmallPositive,
)
from contracts.jobspec import (  # JobKind, Label: also imported from here
    ActionCombinations,
    AssetFilename,
    CheckpointRef,
    JobKind,
    JobSpec,
    Label,
    OnStall,
    Sha256,
    StallSeconds,
    spec_fields,
    spec_of,
)
from contracts.params import ParamsSchema

Attempt = SmallPositive  # stored in INTEGER columns
Text = Annotated[str, msgspec.Meta(max_length=16_384)]
WorkloadName = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
ModuleName = Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[A-Za-z_][\w.]*$")]


class JobEvent(Event, kw_only=True):
    """An event of one job."""

    aggregate: ClassVar[str] = "job"
    job_id: Id

    @property
    def aggregate_id(self) -> str:
        """The job's id."""
        return self.job_id


class JobSubmitted(JobEvent, kw_only=True):
    """A job entered the queue. Schema 2: `max_iterations` (was `iterations`) and `kind` (was implied).

    From `kind` to `max_retries` (except `idempotency_key`) these are the fields of `JobSpec`, declared again
    because msgspec lets a Struct inherit fields from one base only (here `JobEvent`); the log stores them
    flat. Build one with `from_spec`; read them back with `.spec`. tests/unit/test_jobspec.py checks that
    the two agree.
    """

    schema: ClassVar[int] = 2
    kind: JobKind
    workload: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    params: dict[str, Any] = {}
    max_iterations: Positive | None = None
    episodes: Positive | None = None
    checkpoint_of: Id | None = None  # an evaluation: the job whose newest checkpoint it evaluates
    # Events are bounded by what read models store; commands by policy (SubmitJob's Priority, GpuCount, …),
    # so a policy can change without making old events unreadable.
    priority: SmallInt = 0
    gpus: SmallNonNegative = 0
    labels: tuple[Label, ...] = ()
    idempotency_key: Annotated[str, msgspec.Meta(max_length=200)] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_retries: SmallNonNegative = 0
    map_id: Positive | None = None
    map_sha256: Sha256 | None = None
    map_filename: AssetFilename | None = None
    action_combinations: ActionCombinations | None = None
    stall_after_s: StallSeconds | None = None
    on_stall: OnStall = "alert"
    checkpoint_ref: CheckpointRef | None = None
    params_version: SmallNonNegative = 0
    submitted_at: datetime
    # The W3C trace context the submission was decided in: the job's dispatch, worker and job process
    # continue this trace. Empty when nobody traced it.
    traceparent: Annotated[str, msgspec.Meta(max_length=128)] = ""

    @classmethod
    def from_spec(cls, job_id: str, spec: JobSpec, *, submitted_at: datetime, idempotency_key: str | None = None,
                  traceparent: str = "") -> JobSubmitted:
        """The event that submits a job with this spec (the one place a JobSubmitted is built from a spec)."""
        return cls(job_id=job_id, **spec_fields(spec), idempotency_key=idempotency_key, submitted_at=submitted_at,
                   traceparent=traceparent)

    @property
    def spec(self) -> JobSpec:
        """The job's spec."""
        return spec_of(self)


class JobAssigned(JobEvent, kw_only=True):
    """The scheduler placed one attempt of a job on a worker slot."""

    attempt: Attempt
    worker_id: Id
    slot: SmallNonNegative = 0
    gpu_indices: tuple[SmallNonNegative, ...] = ()
    assigned_at: datetime


class JobStarted(JobEvent, kw_only=True):
    """The worker runs the attempt; `resumed_from` is the checkpoint iteration it continues from."""

    attempt: Attempt
    worker_id: Id
    resumed_from: NonNegative | None = None
    corrupt_checkpoints: tuple[str, ...] = ()  # checkpoints that failed their SHA-256 check and were skipped
    started_at: datetime


class JobCheckpointed(JobEvent, kw_only=True):
    """A checkpoint of the attempt is stored in the object store under `name`, with its digest."""

    attempt: Attempt
    iteration: NonNegative
    name: str
    sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    size: NonNegative
    checkpointed_at: datetime


class JobCompleted(JobEvent, kw_only=True):
    """The attempt finished its work; `result` holds the workload's summary."""

    attempt: Attempt
    result: dict[str, Any] = {}
    completed_at: datetime


class JobFailed(JobEvent, kw_only=True):
    """The attempt raised or crashed. Final unless a `JobRequeued` (a retry) follows."""

    attempt: Attempt
    error: Text
    traceback: Text = ""
    retryable: bool = False
    will_retry: bool = False  # a JobRequeued(reason="retry") follows in the same append
    failed_at: datetime


class JobStopRequested(JobEvent, kw_only=True):
    """Someone asked the job to stop; a running attempt checkpoints and ends."""

    reason: Text = "requested"
    requested_at: datetime


class JobStopped(JobEvent, kw_only=True):
    """The job ended because it was asked to; final."""

    attempt: SmallNonNegative
    reason: Text = "requested"
    stopped_at: datetime


class JobRequeued(JobEvent, kw_only=True):
    """The job went back to the queue for a new attempt (worker lost, retry, shutdown)."""

    attempt: Attempt  # the attempt that will run next
    reason: Literal["worker_lost", "retry", "shutdown", "worker_left", "rejected", "stalled"]
    not_before: datetime | None = None
    requeued_at: datetime


class JobTimedOut(JobEvent, kw_only=True):
    """The job ran past its timeout and was ended; final."""

    attempt: SmallNonNegative
    timed_out_at: datetime


class Gpu(Message, kw_only=True):
    """One GPU of a worker."""

    index: SmallNonNegative
    name: Annotated[str, msgspec.Meta(max_length=200)]
    memory_mb: NonNegative


MAX_SLOTS = 1024  # jobs one worker may run at once


class WorkerCapabilities(Message, kw_only=True):
    """What a worker offers: hardware, pools, and how many jobs it runs at once."""

    hostname: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    addresses: tuple[Annotated[str, msgspec.Meta(max_length=64)], ...] = ()
    cpu_cores: SmallPositive
    ram_mb: NonNegative
    gpus: tuple[Gpu, ...] = ()
    labels: tuple[Label, ...] = ("training", "evaluation")
    slots: Annotated[int, msgspec.Meta(ge=1, le=MAX_SLOTS)] = 1
    version: Annotated[str, msgspec.Meta(max_length=64)] = "0"
    # Registered workload names it runs (contracts.workloads); None: it did not say (it may run anything).
    workloads: Annotated[tuple[WorkloadName, ...], msgspec.Meta(max_length=1000)] | None = None
    # Packages it runs `module:function` workloads from; None: any module it can import; empty: none.
    target_modules: Annotated[tuple[ModuleName, ...], msgspec.Meta(max_length=1000)] | None = None
    # -- declared parameters (contracts/params.py) --
    # Registered workload name -> the JSON schema of its parameters, for those that declare them; None: not
    # described (yet: a worker registers first and describes its workloads a moment later).
    workload_params: Annotated[dict[WorkloadName, ParamsSchema], msgspec.Meta(max_length=1000)] | None = None


class WorkerEvent(Event, kw_only=True):
    """An event of one worker."""

    aggregate: ClassVar[str] = "worker"
    worker_id: Id

    @property
    def aggregate_id(self) -> str:
        """The worker's id."""
        return self.worker_id


class WorkerRegistered(WorkerEvent, kw_only=True):
    """A worker joined, or joined again with (maybe) new capabilities; it is healthy.

    `draining`: it is shutting down and takes no new jobs; the ones it runs end (checkpointed) and are
    requeued, then it deregisters.
    """

    capabilities: WorkerCapabilities
    registered_at: datetime
    draining: bool = False


class WorkerLost(WorkerEvent, kw_only=True):
    """No heartbeat from the worker for `lost_after_s`."""

    last_seen: datetime
    lost_at: datetime


class WorkerReturned(WorkerEvent, kw_only=True):
    """A lost worker sent a heartbeat again."""

    returned_at: datetime


class WorkerDeregistered(WorkerEvent, kw_only=True):
    """The worker left on purpose (graceful shutdown)."""

    reason: Text = "shutdown"
    deregistered_at: datetime


class WorkerForgotten(WorkerEvent, kw_only=True):
    """A worker lost for `forget_after_s` is dropped from the list."""

    forgotten_at: datetime


class TokenEvent(Event, kw_only=True):
    """An event of one API token."""

    aggregate: ClassVar[str] = "token"
    token_id: Id

    @property
    def aggregate_id(self) -> str:
        """The token's id."""
        return self.token_id


class TokenIssued(TokenEvent, kw_only=True):
    """An API token was created; only its SHA-256 is kept."""

    role: Literal["admin", "operator", "viewer"]
    token_sha256: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    expires_at: datetime | None = None
    issued_at: datetime
    purpose: Literal["api", "login"] = "api"  # login: a dashboard login link; a new one revokes the old


class TokenRevoked(TokenEvent, kw_only=True):
    """An API token stops working."""

    revoked_at: datetime


NkeyPublic = Annotated[str, msgspec.Meta(pattern=r"^U[A-Z2-7]{55}$")]  # a NATS user's public nkey


class JoinTokenEvent(Event, kw_only=True):
    """An event of one join token: how a new machine joins as a worker (ops.joining)."""

    aggregate: ClassVar[str] = "jointoken"
    token_id: Id

    @property
    def aggregate_id(self) -> str:
        """The join token's id."""
        return self.token_id


class JoinTokenIssued(JoinTokenEvent, kw_only=True):
    """A join token was made. `key` is the public nkey of the credential it carries (never the seed),
    which may only claim the token; the worker that claims it connects with a key of its own."""

    key: NkeyPublic
    labels: tuple[Label, ...] = ()
    reusable: bool = False
    expires_at: datetime
    issued_at: datetime
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class JoinTokenUsed(JoinTokenEvent, kw_only=True):
    """A machine joined with the token as worker `worker_id`, connecting from now on with `worker_key`."""

    worker_id: Id
    worker_key: NkeyPublic
    hostname: Annotated[str, msgspec.Meta(max_length=255)] = ""
    used_at: datetime


class JoinTokenRevoked(JoinTokenEvent, kw_only=True):
    """A join token stops working (machines that joined with it stay: revoke those as workers)."""

    revoked_at: datetime


class WorkerCredentialEvent(Event, kw_only=True):
    """An event of one worker's NATS credential, as the admin (or a node's export) gave or took it: every node
    of a cluster lets in (or no longer lets in) exactly what these say (ops.members). Public keys only."""

    aggregate: ClassVar[str] = "credential"
    worker_id: Id

    @property
    def aggregate_id(self) -> str:
        """The worker's id."""
        return self.worker_id


class WorkerCredentialIssued(WorkerCredentialEvent, kw_only=True):
    """Worker `worker_id` may connect with `key` (a key it had before stops working)."""

    key: NkeyPublic
    issued_at: datetime


class WorkerCredentialRevoked(WorkerCredentialEvent, kw_only=True):
    """Worker `worker_id` may connect no more, whatever key it had (a join token's included)."""

    revoked_at: datetime


# A map's display name and file name: no path separators, no "..", nothing hidden (gateway/maps_domain.py).
MapName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.()+-]*$")]
MapFilename = AssetFilename


class MapEvent(Event, kw_only=True):
    """An event of one map: a file runs use (a level, an environment config, a data shard), by its number."""

    aggregate: ClassVar[str] = "map"
    map_id: Positive

    @property
    def aggregate_id(self) -> str:
        """The map's number, as text."""
        return str(self.map_id)


class MapUploaded(MapEvent, kw_only=True):
    """A map was stored: its bytes are in the maps bucket under `sha256`."""

    name: MapName
    filename: MapFilename
    sha256: Sha256
    size: Positive
    uploaded_at: datetime


class MapDeleted(MapEvent, kw_only=True):
    """A map is gone; its number is never given again."""

    deleted_at: datetime
class AlertEvent(Event, kw_only=True):
    """An event of one alert: one occurrence of a rule's condition, from raised to resolved (the monitor's)."""

    aggregate: ClassVar[str] = "alert"
    alert_id: Id

    @property
    def aggregate_id(self) -> str:
        """The alert's id."""
        return self.alert_id


RuleName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
TargetKind = Literal["host", "job"]


class AlertRaised(AlertEvent, kw_only=True):
    """A rule's condition held for its pending duration on a host or job: `value` passed `threshold`."""

    rule: RuleName
    target_kind: TargetKind
    target: Id  # the host id (a worker's id) or the job id
    value: float | None = None  # None: the condition is the absence of data (a silent host)
    threshold: float
    message: Text = ""
    raised_at: datetime


class JobStalled(AlertEvent, kw_only=True):
    """A running job reported no progress for `stall_after_s`; an `AlertResolved` ends it when progress resumes."""

    job_id: Id
    worker_id: Id | None = None
    last_progress_at: datetime | None = None  # None: it never reported progress in this attempt
    stall_after_s: Annotated[float, msgspec.Meta(gt=0)]
    raised_at: datetime


class AlertResolved(AlertEvent, kw_only=True):
    """The condition of an alert cleared (below the clear threshold, progress again, the job ended)."""

    value: float | None = None
    reason: Literal["recovered", "data_back", "progress", "job_ended", "rule_removed", "restarted"] = "recovered"
    resolved_at: datetime


# Firewall (services/firewall): what `stoker firewall` planned, applied and removed on one host, appended by
# the admin CLI (the `firewall` aggregate has no service writer: opening ports needs root, not a NATS role).
FirewallBackend = Literal["firewalld", "ufw", "nftables", "iptables", "windows", "macos"]
CommandLine = Annotated[str, msgspec.Meta(max_length=2_000)]


class FirewallRule(Message, kw_only=True):
    """One opening: `port`/`protocol` from `source` (CIDR, or `any`), for what listens there (`name`)."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9-]*$")]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    protocol: Literal["tcp", "udp"] = "tcp"
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class FirewallEvent(Event, kw_only=True):
    """An event of one host's firewall, as stoker changed it."""

    aggregate: ClassVar[str] = "firewall"
    host_id: Id
    backend: FirewallBackend
    rules: Annotated[tuple[FirewallRule, ...], msgspec.Meta(max_length=256)] = ()
    commands: Annotated[tuple[CommandLine, ...], msgspec.Meta(max_length=512)] = ()

    @property
    def aggregate_id(self) -> str:
        """The host's id."""
        return self.host_id


class FirewallPlanned(FirewallEvent, kw_only=True):
    """A plan with changes was made: `rules` is what it opens, `commands` what it runs (handed to a person
    to run as root when `by_hand`)."""

    by_hand: bool = False
    planned_at: datetime


class FirewallApplied(FirewallEvent, kw_only=True):
    """The firewall opens `rules` now: `commands` ran (the runtime and the permanent change)."""

    applied_at: datetime


class FirewallRemoved(FirewallEvent, kw_only=True):
    """Stoker's rules `rules` were taken away by `commands`; nobody else's were touched."""

    removed_at: datetime


AnyFirewallEvent = FirewallPlanned | FirewallApplied | FirewallRemoved


# --- LAN addresses (discovery's `network` aggregate, one per control-plane machine: issue 14) ---
class LanAddress(Message, kw_only=True):
    """One address of one interface; `skipped` says why it is not offered to other machines ("" when usable)."""

    interface: Annotated[str, msgspec.Meta(max_length=64)]
    address: Annotated[str, msgspec.Meta(max_length=64)]
    family: Literal["ipv4", "ipv6"]
    skipped: Annotated[str, msgspec.Meta(max_length=64)] = ""


class NetworkEvent(Event, kw_only=True):
    """An event of one machine's network (`host`: its host name as an id, contracts.network.host_id)."""

    aggregate: ClassVar[str] = "network"
    host: Id

    @property
    def aggregate_id(self) -> str:
        """The machine's host id."""
        return self.host


class NetworkChanged(NetworkEvent, kw_only=True):
    """The machine's usable addresses or its preferred one changed (the first one seen: `old` is empty)."""

    old: Annotated[tuple[LanAddress, ...], msgspec.Meta(max_length=256)] = ()
    new: Annotated[tuple[LanAddress, ...], msgspec.Meta(max_length=256)] = ()
    old_preferred: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    preferred: Annotated[str, msgspec.Meta(max_length=64)] | None = None  # None: no usable address
    changed_at: datetime


AnyNetworkEvent = NetworkChanged
# --- end of LAN addresses ---

AnyJobEvent = (
    JobSubmitted | JobAssigned | JobStarted | JobCheckpointed | JobCompleted | JobFailed
    | JobStopRequested | JobStopped | JobRequeued | JobTimedOut
)
AnyWorkerEvent = WorkerRegistered | WorkerLost | WorkerReturned | WorkerDeregistered | WorkerForgotten
AnyTokenEvent = TokenIssued | TokenRevoked
AnyJoinTokenEvent = JoinTokenIssued | JoinTokenUsed | JoinTokenRevoked
AnyWorkerCredentialEvent = WorkerCredentialIssued | WorkerCredentialRevoked
AnyMapEvent = MapUploaded | MapDeleted
AnyAlertEvent = AlertRaised | JobStalled | AlertResolved
AnyEvent = (AnyJobEvent | AnyWorkerEvent | AnyTokenEvent | AnyJoinTokenEvent | AnyWorkerCredentialEvent | AnyMapEvent
            | AnyAlertEvent
            | AnyFirewallEvent
            | AnyNetworkEvent)

EVENT_TYPES: dict[str, type[Event]] = {cls.__name__: cls for cls in AnyEvent.__args__}
