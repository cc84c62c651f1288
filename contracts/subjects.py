"""Subject, stream and bucket names and the size limits of messages: the one place that spells them.

The streams' configurations are in `eventstore/streams.py`: contracts say what is sent, not how NATS keeps it.
"""

from __future__ import annotations

import re

import msgspec

MAX_EVENT_BYTES = 1024 * 1024
MAX_TELEMETRY_BYTES = 4 * 1024 * 1024
JOB_TELEMETRY_KINDS = ("progress", "episode")  # a job's samples: their subjects name the worker that sent them
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


class Topology(msgspec.Struct, frozen=True):
    """Names of every stream, subject and bucket under one prefix (tests use their own prefix)."""

    prefix: str = "stoker"

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"prefix {self.prefix!r} must be lowercase letters, digits or _")

    @property
    def events_stream(self) -> str:
        """The event log stream: STOKER_EVENTS."""
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def telemetry_stream(self) -> str:
        """The telemetry stream: STOKER_TELEMETRY."""
        return f"{self.prefix.upper()}_TELEMETRY"

    @property
    def dispatch_stream(self) -> str:
        """Per-worker delivery of assignments and stop requests: STOKER_DISPATCH."""
        return f"{self.prefix.upper()}_DISPATCH"

    def events(self, aggregate: str = "*", aggregate_id: str = "*") -> str:
        """`stoker.events.<aggregate>.<id>`; wildcards by default."""
        return f"{self.prefix}.events.{aggregate}.{aggregate_id}"

    @property
    def all_events(self) -> str:
        """Every event subject."""
        return f"{self.prefix}.events.>"

    def telemetry(self, kind: str = "*", key: str = "*") -> str:
        """`stoker.telemetry.<kind>.<id>`: kinds heartbeat and host (a job's samples: `job_telemetry`).

        `telemetry("progress"|"episode", job_id)` is the subject samples had before they named their worker:
        only history stored before the upgrade sits there (no one but admin may publish on it now).
        """
        return f"{self.prefix}.telemetry.{kind}.{key}"

    def job_telemetry(self, kind: str, job_id: str = "*", worker_id: str = "*") -> str:
        """`stoker.telemetry.<kind>.<job_id>.<worker_id>`: a job's progress or episode samples, as one worker sent them.

        The last token says who published (a worker may publish only its own), so a reader can believe only
        the workers the job was assigned to.
        """
        if kind not in JOB_TELEMETRY_KINDS:
            raise ValueError(f"{kind!r} is not a job telemetry kind")
        return f"{self.prefix}.telemetry.{kind}.{job_id}.{worker_id}"

    def parse_job_telemetry(self, subject: str) -> tuple[str, str, str | None] | None:
        """`….progress.J.W` → ("progress", "J", "W"); the old `….progress.J` → ("progress", "J", None); else None."""
        parts = subject.split(".")
        if len(parts) not in (4, 5) or parts[0] != self.prefix or parts[1] != "telemetry" \
                or parts[2] not in JOB_TELEMETRY_KINDS:
            return None
        return parts[2], parts[3], parts[4] if len(parts) == 5 else None

    def host_samples(self, host_id: str = "*") -> str:
        """`stoker.telemetry.host.<host_id>`: one machine's health samples (the monitor's `HostSample`)."""
        return self.telemetry("host", host_id)

    def dispatch(self, worker_id: str = "*") -> str:
        """`stoker.dispatch.<worker_id>`: what the scheduler hands one worker."""
        return f"{self.prefix}.dispatch.{worker_id}"

    def dispatch_consumer(self, worker_id: str) -> str:
        """The durable consumer one worker reads its dispatch subject with: `worker-<worker_id>`."""
        return f"worker-{worker_id}"

    def command(self, service: str, verb: str, worker_id: str | None = None) -> str:
        """`stoker.cmd.<service>.<verb>`: a service's micro endpoint; a worker's own commands end in `.<worker_id>`."""
        subject = f"{self.prefix}.cmd.{service}.{verb}"
        return subject if worker_id is None else f"{subject}.{worker_id}"

    def service_name(self, service: str) -> str:
        """The nats.micro service name (`nats micro ls` shows it)."""
        return f"{self.prefix}-{service}"

    @property
    def checkpoint_bucket(self) -> str:
        """Object store bucket for checkpoints."""
        return f"{self.prefix}-checkpoints"

    @property
    def map_bucket(self) -> str:
        """Object store bucket for maps (assets runs use), each under its SHA-256."""
        return f"{self.prefix}-maps"

    @property
    def lease_bucket(self) -> str:
        """KV bucket holding leader leases (one scheduler acts at a time)."""
        return f"{self.prefix}-leases"

    @property
    def snapshot_bucket(self) -> str:
        """KV bucket holding state snapshots of long logs."""
        return f"{self.prefix}-snapshots"

    def parse_event_subject(self, subject: str) -> tuple[str, str] | None:
        """`stoker.events.job.X` → ("job", "X"); None when the subject is not an event subject."""
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != self.prefix or parts[1] != "events":
            return None
        return parts[2], parts[3]
