"""Bodies of /api/v1/workers: the fleet as the registry and the heartbeats see it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from contracts.events import WorkerCapabilities
from gateway.schemas.common import Body, Id, Reply

WorkerStatus = Literal["healthy", "lost", "left"]


class GpuView(Reply, kw_only=True):
    """One GPU of a worker."""

    index: int
    name: str
    memory_mb: int


class WorkerView(Reply, kw_only=True):
    """One worker: registry state, hardware, newest heartbeat and the jobs it runs."""

    id: str
    status: WorkerStatus
    hostname: str
    addresses: list[str]
    cpu_cores: int
    ram_mb: int
    gpus: list[GpuView]
    labels: list[str]
    slots: int
    version: str
    registered_at: datetime
    last_change_at: datetime
    lost_at: datetime | None
    last_seen: datetime | None
    running_jobs: list[str]
    free_slots: int | None
    cpu_percent: float | None
    memory_percent: float | None


class WorkerList(Reply, kw_only=True):
    """Every known worker."""

    items: list[WorkerView]


class RegisterWorkerBody(Body, kw_only=True):
    """A worker joining over HTTP: same semantics as RegisterWorker over NATS (idempotent).

    Its GPUs' indices must be distinct (a 400 otherwise): a rule JSON Schema cannot state.
    """

    worker_id: Id
    capabilities: WorkerCapabilities


class WorkerRegistration(Reply, kw_only=True):
    """Reply to a registration."""

    worker_id: str
    status: str
    seq: int
