"""Bodies of health, the admin event feed and token management."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from gateway.schemas.common import Body, Reply
from gateway.schemas.monitor import AlertView, HostSummary

Role = Literal["admin", "operator", "viewer"]


class NatsHealth(Reply, kw_only=True):
    """The gateway's NATS connection."""

    connected: bool
    url: str | None


class StreamHealth(Reply, kw_only=True):
    """One JetStream stream."""

    name: str
    ok: bool
    messages: int
    last_seq: int
    error: str | None = None


class ServiceHealth(Reply, kw_only=True):
    """A service's answers to `$SRV.PING` (one per running instance)."""

    name: str
    required: bool
    up: bool
    instances: int
    versions: list[str]


class ProjectionHealth(Reply, kw_only=True):
    """How far a read model is behind the event log, and the events it passed over."""

    name: str
    checkpoint: int
    lag: int  # events in the log it has not applied yet
    behind_s: float | None = None  # how long the oldest of those has been waiting (None: caught up)
    updated_at: str | None
    malformed: int = 0  # messages it skipped because they are no readable event
    dead_letters: int = 0  # events it could not apply and quarantined (stoker_dead_letters)


class StoreHealth(Reply, kw_only=True):
    """The read-model database."""

    ok: bool
    dialect: str
    error: str | None = None


class WorkersHealth(Reply, kw_only=True):
    """Workers that can take jobs now: `status` is "available" when there is one, else "none"."""

    count: int
    status: Literal["available", "none"]


class Health(Reply, kw_only=True):
    """Overall status and each part: 503 unless NATS, streams, store, required services and read models are fine.

    `problems` says why the status is not ok. Malformed and dead-lettered events are counted (and named
    in `warnings`) but leave the status alone: they are history the platform has passed over, not a
    part that is down.
    """

    status: Literal["healthy", "unhealthy"]  # the earlier API's word: healthy exactly when `state` is ok
    version: str
    timestamp: datetime
    database: Literal["connected", "disconnected"]  # the read-model store
    storage: Literal["available", "unavailable"]  # the event, telemetry and dispatch streams
    workers: WorkersHealth
    state: Literal["ok", "degraded", "down"]
    problems: list[str] = []
    warnings: list[str] = []
    malformed: int = 0  # distinct messages on the event stream that are no readable event
    dead_letters: int = 0  # events a projection could not apply, over all projections
    nats: NatsHealth
    streams: list[StreamHealth]
    services: list[ServiceHealth]
    projections: list[ProjectionHealth]
    store: StoreHealth
    checked_at: datetime
    # What the monitors say (issue 12): each machine's newest figures, and the open alerts, newest first.
    # They leave the status alone (a hot GPU is not a platform that is down) and are named in `warnings`.
    hosts: list[HostSummary] = []
    open_alerts: int = 0
    alerts: list[AlertView] = []


class EventRecord(Reply, kw_only=True):
    """One event of the log."""

    seq: int
    time: datetime | None
    subject: str
    type: str
    aggregate: str
    aggregate_id: str
    event_id: str
    correlation_id: str | None
    event: dict[str, Any]


class EventPage(Reply, kw_only=True):
    """Events after `since`, oldest first; ask again with `since=next_since`."""

    events: list[EventRecord]
    next_since: int
    last_seq: int


class TokenCreate(Body, kw_only=True):
    """A token to issue; the secret is in the reply and nowhere else."""

    role: Role
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    expires_in_s: Annotated[float, msgspec.Meta(gt=0, le=10 * 366 * 86400)] | None = None


class TokenCreated(Reply, kw_only=True):
    """A new token: `token` is shown this once."""

    token_id: str
    token: str
    role: Role
    name: str
    expires_at: datetime | None


class TokenView(Reply, kw_only=True):
    """A token without its secret."""

    token_id: str
    role: Role
    name: str
    issued_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    active: bool


class TokenList(Reply, kw_only=True):
    """Every token ever issued."""

    items: list[TokenView]
