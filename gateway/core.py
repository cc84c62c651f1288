"""The gateway's working parts and the operations several controllers share (commands, read-your-writes)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats.aio.client import Client

from contracts.base import Command, is_valid_id
from contracts.commands import JobAccepted, JobsStopping, StopJob, SubmitJob
from contracts.errors import NotFound
from contracts.subjects import Topology
from eventstore.log import JetStreamLog
from eventstore.micro import call
from eventstore.stores.base import ReadModelStore
from gateway import queries
from gateway.auth import Authenticator
from gateway.hub import Hub
from gateway.schemas.jobs import JobView
from gateway.settings import Settings
from gateway.tokens import TokenRegistry
from gateway.views import fold_job, job_view

R = TypeVar("R")
POLL_S = 0.02


@dataclass
class Gateway:
    """Everything a request handler may use; built by `create_app`'s lifespan, nothing global."""

    settings: Settings
    nc: Client
    log: JetStreamLog
    store: ReadModelStore
    registry: TokenRegistry
    auth: Authenticator
    hub: Hub
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    pages: queries.PageCache = field(default_factory=queries.PageCache)
    jobs_seq: int = 0  # the jobs projection's checkpoint as last seen (polled, and bumped by read-your-writes)

    async def watch_checkpoint(self, period: float = POLL_S) -> None:
        """Keep `jobs_seq` current, so cached job pages expire within `period` of the projector moving on."""
        while True:
            try:
                self.jobs_seq = max(self.jobs_seq, await queries.projection_seq(self.store, "jobs"))
            except Exception:  # a store hiccup only delays expiry; health reports the store
                pass
            await asyncio.sleep(period)

    @property
    def topology(self) -> Topology:
        """Stream and subject names in use."""
        return self.log.topology

    async def call(self, command: Command, reply_type: type[R]) -> R:
        """Send a command to its service; DomainErrors propagate to the one error mapping."""
        return await call(self.nc, self.topology, command, reply_type,
                          timeout=self.settings.gateway.command_timeout_s)

    async def job(self, job_id: str, kind: str | None = None) -> JobView:
        """One job from the read model, or folded from the log while the projector catches up."""
        row = await queries.job_row(self.store, job_id)
        if row is None:
            # Ids become subject tokens; one that cannot be a subject names no job.
            events, _version = await self.log.load("job", job_id) if is_valid_id(job_id) else ([], 0)
            row = await fold_job(events) if events else None
        if row is None or (kind is not None and row["kind"] != kind):
            what = {"train": "training run", "eval": "evaluation run"}.get(kind or "", "job")
            raise NotFound(f"no {what} {job_id}")
        return job_view(row)

    async def submit(self, command: SubmitJob) -> tuple[JobView, bool]:
        """Submit a job, wait briefly until the read model shows it, and return it."""
        accepted = await self.call(command, JobAccepted)
        seq = accepted.seq or await self.log.version("job", accepted.job_id)
        await self.wait_projected(seq)
        return await self.job(accepted.job_id), accepted.created

    async def stop(self, job_id: str | None, kind: str | None = None) -> list[str]:
        """Ask the scheduler to stop one job (404 unless it is of `kind`) or every unfinished one of `kind`."""
        if job_id is not None:
            await self.job(job_id, kind)
        command = StopJob(job_id=job_id) if job_id is not None else StopJob(kind=kind)
        reply = await self.call(command, JobsStopping)
        return reply.job_ids

    async def wait_projected(self, seq: int, projection: str = "jobs") -> bool:
        """Wait up to `read_your_writes_s` for the projector's checkpoint to reach `seq`."""
        deadline = time.monotonic() + self.settings.gateway.read_your_writes_s
        while True:
            reached = await queries.projection_seq(self.store, projection)
            if projection == "jobs":
                self.jobs_seq = max(self.jobs_seq, reached)
            if reached >= seq:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
