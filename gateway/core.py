"""The gateway's working parts and the operations several controllers share (commands, read-your-writes)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client

from contracts import events as ev
from contracts.base import Command, is_valid_id
from contracts.commands import JobAccepted, JobsStopping, StopJob, SubmitJob
from contracts.errors import DomainError, NotFound, Unavailable
from contracts.jobspec import CheckpointRef
from contracts.subjects import Topology
from eventstore.log import JetStreamLog
from eventstore.micro import NoAnswer, NoResponders, call
from eventstore.observability import get_logger
from eventstore.readmodels import projection_seq
from eventstore.readmodels.jobs import find_checkpoint, fold_job, get_job, job_workers
from eventstore.readmodels.maps import get_map
from eventstore.stores.base import ReadModelStore
from eventstore.telemetry import assigned_workers
from gateway.auth import Authenticator
from gateway.hub import Hub
from gateway.live import EVENTS
from gateway.schemas.jobs import JobView
from gateway.settings import Settings
from gateway.tokens import TokenRegistry
from gateway.views import job_view

R = TypeVar("R")
log = get_logger(component="gateway")
POLL_S = 0.02
IDLE_CHECK_S = 1.0  # with no event the checkpoint has not passed, the store is still read this often
RETRY_FIRST_S, RETRY_MAX_S = 0.05, 0.5  # backoff between sends while no service answers
REPEAT_AFTER_S = 1.0  # a repeatable command unanswered this long is sent again (its service may have died)


def checkpoint_read_due(seen: int, log_position: int, since_read: float, idle_s: float) -> bool:
    """Whether to read the jobs checkpoint now: the log holds an event it had not passed, or it is time anyway."""
    return log_position > seen or since_read >= idle_s


class PageCache:
    """Job pages by query, valid while the jobs projection's checkpoint stays where it was read at."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._pages: OrderedDict[tuple, tuple[int, Any]] = OrderedDict()

    def get(self, key: tuple, seq: int) -> Any | None:
        """The page cached for `key` at checkpoint `seq`, or None."""
        hit = self._pages.get(key)
        if hit is None or hit[0] != seq:
            return None
        self._pages.move_to_end(key)
        return hit[1]

    def put(self, key: tuple, seq: int, page: Any) -> None:
        """Remember a page read at checkpoint `seq`."""
        self._pages[key] = (seq, page)
        self._pages.move_to_end(key)
        while len(self._pages) > self.size:
            self._pages.popitem(last=False)


class ServiceTimeout(DomainError):
    """A service got the command and did not answer in time: 504 (503 is for no service being there)."""

    code = 504
    error = "timeout"


def may_repeat(command: Command) -> bool:
    """Whether a command that reached a service may be sent again without being carried out twice."""
    return isinstance(command, SubmitJob) and command.idempotency_key is not None


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
    pages: PageCache = field(default_factory=PageCache)
    jobs_seq: int = 0  # the jobs projection's checkpoint as last seen (polled, and bumped by read-your-writes)
    map_files: Any = None  # gateway.maps.MapFiles: the maps bucket
    phone: Any = None  # gateway.phone.PhoneLink: the "Open on your phone" QR code

    async def watch_checkpoint(self, period: float = POLL_S, idle_s: float = IDLE_CHECK_S) -> None:
        """Keep `jobs_seq` current, so cached job pages expire within `period` of the projector moving on.

        The store is read every `period` only while the log holds events the checkpoint has not passed
        (the hub's position tells, from memory); otherwise once every `idle_s`, in case the hub is
        behind, and in between this sleeps until the hub reads a new event: an idle gateway does not wake
        50 times a second (each wake-up takes a core from a training job's threads for a moment). A failing
        read is logged once, and once more when reads work again.
        """
        last_read, failing = -idle_s, False
        while True:
            now = time.monotonic()
            if not checkpoint_read_due(self.jobs_seq, self.hub.positions[EVENTS], now - last_read, idle_s):
                await self.hub.events_after(self.jobs_seq, idle_s - (now - last_read))
                continue
            last_read = now
            try:
                self.jobs_seq = max(self.jobs_seq, await projection_seq(self.store, "jobs"))
            except Exception as exc:  # a store hiccup only delays expiry; health reports the store
                if not failing:
                    log.warning("cannot read the jobs checkpoint; cached job pages expire late", error=repr(exc))
                failing = True
                await asyncio.sleep(idle_s)
                continue
            if failing:
                log.info("reading the jobs checkpoint again", seq=self.jobs_seq)
                failing = False
            await asyncio.sleep(period)

    @property
    def topology(self) -> Topology:
        """Stream and subject names in use."""
        return self.log.topology

    async def call(self, command: Command, reply_type: type[R]) -> R:
        """Send a command to its service within `command_timeout_s`; DomainErrors go to the one error mapping.

        While nobody answers on the subject (a standby is still taking the scheduler's lease) the
        command is sent again with a short backoff: "no responders" means it reached no one. A command
        that reached a service and got no answer (a leader killed mid-command) is sent again only when
        doing it twice is impossible: a submission with an idempotency key, which the next leader
        recognises. A keyless submission is never repeated: it might have been queued. Giving up is a
        ServiceTimeout (504) when the command reached a service that never answered, Unavailable (503)
        when it reached none.
        """
        timeout = self.settings.gateway.command_timeout_s
        deadline = time.monotonic() + timeout
        repeatable = may_repeat(command)
        delay = RETRY_FIRST_S
        while True:
            left = deadline - time.monotonic()
            try:
                return await call(self.nc, self.topology, command, reply_type,
                                  timeout=min(left, REPEAT_AFTER_S) if repeatable else left)
            except (NoResponders, NoAnswer) as exc:
                if isinstance(exc, NoAnswer) and not repeatable:
                    hint = " (an idempotency_key makes sending it again safe)" if isinstance(command, SubmitJob) else ""
                    raise ServiceTimeout(f"the {command.service} service did not answer {type(command).__name__} "
                                         f"within {timeout:g} s; the command may or may not have been carried "
                                         f"out{hint}") from None
                if time.monotonic() + delay >= deadline:
                    if isinstance(exc, NoAnswer):  # it reached a service each time, which never answered
                        raise ServiceTimeout(f"the {command.service} service did not answer "
                                             f"{type(command).__name__} within {timeout:g} s; try again") from None
                    raise Unavailable(f"no {command.service} service answered within {timeout:g} s (none is "
                                      "running, or a standby is still taking over); try again") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def job(self, job_id: str, kind: str | None = None) -> JobView:
        """One job from the read model, or folded from the log while the projector catches up."""
        row = await get_job(self.store, job_id)
        if row is None:
            # Ids become subject tokens; one that cannot be a subject names no job.
            events, _version = await self.log.load("job", job_id) if is_valid_id(job_id) else ([], 0)
            row = await fold_job(events) if events else None
        if row is None or (kind is not None and row["kind"] != kind):
            what = {"train": "training run", "eval": "evaluation run"}.get(kind or "", "job")
            raise NotFound(f"no {what} {job_id}")
        return job_view(row)

    async def workers_of(self, job: JobView) -> list[str]:
        """The workers the job was assigned to, whose telemetry of it is believed: from the read model, or
        from the job's events while the projector has not caught up with its current worker (or with its
        first assignment: a row that names no worker yet may be one the projector has not moved on)."""
        workers = await job_workers(self.store, job.id)
        if not workers or (job.worker_id is not None and job.worker_id not in workers):
            events, _version = await self.log.load("job", job.id)
            workers = assigned_workers(events)
        return workers

    async def checkpoint(self, name: str) -> CheckpointRef:
        """A stored checkpoint by its object name, from the read model or (while it catches up) the log; 404."""
        row = await find_checkpoint(self.store, name)
        if row is not None:
            return CheckpointRef(name=row["name"], sha256=row["sha256"], size=row["size"], iteration=row["iteration"])
        job_id = name.split("/", 1)[0]
        events, _version = await self.log.load("job", job_id) if is_valid_id(job_id) else ([], 0)
        for stored in events:
            e = stored.event
            if isinstance(e, ev.JobCheckpointed) and e.name == name:
                return CheckpointRef(name=e.name, sha256=e.sha256, size=e.size, iteration=e.iteration)
        raise NotFound(f"no stored checkpoint {name!r} (GET /api/v1/jobs/{job_id}/checkpoints lists that job's)")

    async def map_name(self, map_id: int | None) -> str | None:
        """A map's name (None: no map, or one the read model does not know)."""
        row = await get_map(self.store, map_id) if map_id is not None else None
        return row["name"] if row else None

    async def submit(self, command: SubmitJob) -> tuple[JobView, bool]:
        """Submit a job, wait briefly until the read model shows it, and return it (404 for a map
        that does not exist or was deleted)."""
        if command.map_id is not None:
            row = await get_map(self.store, command.map_id)
            if row is None or row["deleted_at"] is not None:
                raise NotFound(f"no map {command.map_id}: upload it with POST /api/v1/maps/upload")
            # The job pins the map's content: the worker fetches exactly these bytes.
            command = msgspec.structs.replace(command, map_sha256=row["sha256"], map_filename=row["filename"])
        elif command.map_sha256 is not None or command.map_filename is not None:
            command = msgspec.structs.replace(command, map_sha256=None, map_filename=None)  # only with a map_id
        if command.checkpoint_ref is not None:  # a chosen checkpoint: pinned to what is stored under its name
            pinned = await self.checkpoint(command.checkpoint_ref.name)
            command = msgspec.structs.replace(command, checkpoint_ref=pinned)
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
            reached = await projection_seq(self.store, projection)
            if projection == "jobs":
                self.jobs_seq = max(self.jobs_seq, reached)
            if reached >= seq:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
