"""A real gateway for tests: uvicorn on a free port, a projector, stand-in services on the command subjects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from contracts import events as ev
from contracts.base import new_id, utcnow
from contracts.codec import encode
from contracts.commands import (
    JobAccepted,
    JobsStopping,
    RegisterWorker,
    StopJob,
    SubmitJob,
    WorkerAccepted,
)
from contracts.errors import NotFound
from contracts.status import final_status
from contracts.subjects import Topology
from contracts.telemetry import EpisodeReport, JobProgress
from eventstore.config import CommonSettings
from eventstore.log import JetStreamLog
from eventstore.micro import start_service
from eventstore.projection import ProjectionRunner
from eventstore.readmodels import all_projections
from eventstore.server import free_port
from eventstore.stores.base import ReadModelStore
from eventstore.stores.sqlite import SqliteStore
from gateway.app import create_app
from gateway.settings import GatewaySettings, Settings
from gateway.tokens import issue_token
from services.scheduler.board import apply_in_place, initial_state

ROLES = ("viewer", "operator", "admin")


def finished(events: list[Any]) -> bool:
    """Whether a job's events end it."""
    return any(final_status(e.event) for e in events)


def current_attempt(job_id: str, events: list[Any]) -> int:
    """The job's attempt now, folded as the scheduler folds it (not a copy of its rules)."""
    board = initial_state()
    for stored in events:
        apply_in_place(board, stored.event)
    return board.jobs[job_id].attempt


class FakeScheduler:
    """Stand-in for the scheduler service: submit and stop, appending the events the real one would."""

    def __init__(self, event_log: JetStreamLog) -> None:
        self.log = event_log
        self.keys: dict[str, str] = {}
        self.kinds: dict[str, str] = {}

    async def submit(self, command: SubmitJob) -> JobAccepted:
        """JobSubmitted (idempotent by key)."""
        if command.idempotency_key in self.keys:
            job_id = self.keys[command.idempotency_key]
            return JobAccepted(job_id=job_id, created=False, seq=await self.log.version("job", job_id))
        job_id = new_id()
        fields = {f: getattr(command, f) for f in command.__struct_fields__}
        result = await self.log.append("job", job_id, [ev.JobSubmitted(job_id=job_id, submitted_at=utcnow(),
                                                                       **fields)], 0)
        if command.idempotency_key:
            self.keys[command.idempotency_key] = job_id
        self.kinds[job_id] = command.kind
        return JobAccepted(job_id=job_id, created=True, seq=result.last_seq)

    async def stop(self, command: StopJob) -> JobsStopping:
        """JobStopRequested + JobStopped for each unfinished target."""
        if command.job_id is not None:
            targets = [command.job_id]
        else:
            targets = [j for j, k in self.kinds.items() if command.kind in (None, k)]
        stopped = []
        for job_id in targets:
            events, version = await self.log.load("job", job_id)
            if not events and command.job_id is not None:
                raise NotFound(f"no job {job_id}")
            if events and not finished(events):
                now = utcnow()
                attempt = current_attempt(job_id, events)
                await self.log.append("job", job_id, [ev.JobStopRequested(job_id=job_id, requested_at=now),
                                                      ev.JobStopped(job_id=job_id, attempt=attempt, stopped_at=now)],
                                      version)
                stopped.append(job_id)
        return JobsStopping(job_ids=stopped)

    async def register(self, command: RegisterWorker) -> WorkerAccepted:
        """WorkerRegistered (discovery's part)."""
        result = await self.log.append("worker", command.worker_id, [ev.WorkerRegistered(
            worker_id=command.worker_id, capabilities=command.capabilities, registered_at=utcnow())])
        return WorkerAccepted(worker_id=command.worker_id, status="healthy", seq=result.last_seq)


async def start_fakes(nc: Any, topology: Topology, event_log: JetStreamLog) -> list[Any]:
    """Micro services answering submit/stop (scheduler) and register (discovery)."""
    fake = FakeScheduler(event_log)
    scheduler = await start_service(nc, topology, "scheduler", "0.0.0-test", {
        "submit": (SubmitJob, fake.submit), "stop": (StopJob, fake.stop)})
    discovery = await start_service(nc, topology, "discovery", "0.0.0-test", {
        "register": (RegisterWorker, fake.register)})
    return [scheduler, discovery]


@dataclass
class Stack:
    """A running gateway and what drives it."""

    url: str
    nc: Any
    log: JetStreamLog
    topology: Topology
    store: ReadModelStore
    runner: ProjectionRunner
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        """The live socket."""
        return self.url.replace("http://", "ws://") + "/ws"

    def client(self, role: str | None = "admin", token: str | None = None) -> httpx.AsyncClient:
        """An HTTP client carrying a token of `role` (None: no token)."""
        secret = token or (self.tokens[role] if role else None)
        headers = {"Authorization": f"Bearer {secret}"} if secret else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=20)

    async def projected(self) -> None:
        """Wait until the projector has applied everything in the log now."""
        assert await self.runner.wait_for(await self.log.last_seq(), timeout=10)


async def serve(app: Any, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """uvicorn in this event loop, started."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # the test runner owns signals
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task


@asynccontextmanager
async def gateway_stack(nats_url: str, nc: Any, topology: Topology, tmp_path: Path, *, fakes: bool = True,
                        store: ReadModelStore | None = None, reader: ReadModelStore | None = None,
                        projector: bool = True, **gateway: Any) -> AsyncIterator[Stack]:
    """Streams, tokens of every role, a projector, fake services and the gateway on a free port.

    With `projector=False` no projector runs (a test starts the real one, or none).
    """
    event_log = JetStreamLog(nc, topology)
    await event_log.ensure_streams()
    tokens = {role: (await issue_token(event_log, role, f"test {role}"))[1] for role in ROLES}
    own = store is None
    store = store or await SqliteStore.open(tmp_path / "readmodels.sqlite3")
    reader = reader or (await SqliteStore.open(tmp_path / "readmodels.sqlite3") if own else store)
    runner = ProjectionRunner(event_log, store, all_projections(), max_delay=0.005)
    await runner.prepare()
    running = asyncio.create_task(runner.run()) if projector else None
    services = await start_fakes(nc, topology, event_log) if fakes else []
    if projector:  # answers $SRV.PING as the projector service does
        services.append(await start_service(nc, topology, "projector", "0.0.0-test", {}))
    port = free_port()
    settings = Settings(common=CommonSettings(data_dir=str(tmp_path), nats_url=nats_url, prefix=topology.prefix),
                        gateway=GatewaySettings(port=port, **{"auth_max_failures": 10_000, **gateway}))
    server, task = await serve(create_app(settings, store=reader), port)
    try:
        yield Stack(f"http://127.0.0.1:{port}", nc, event_log, topology, reader, runner, tokens)
    finally:
        server.should_exit = True
        await task
        for service in services:
            await service.stop()
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        if own:
            await reader.close()
            await store.close()


async def run_job(event_log: JetStreamLog, job_id: str, *, kind: str = "train", finish: bool = True,
                  result: dict[str, Any] | None = None, checkpoint_of: str | None = None) -> None:
    """A job's life in events: submitted, assigned, started, checkpointed, (completed)."""
    now = utcnow()
    extra = {"max_iterations": 10} if kind == "train" else {"episodes": 3, "checkpoint_of": checkpoint_of}
    await event_log.append("job", job_id, [
        ev.JobSubmitted(job_id=job_id, kind=kind, workload="2048" if kind == "train" else "2048-eval",
                        submitted_at=now, **extra),
        ev.JobAssigned(job_id=job_id, attempt=1, worker_id="w1", assigned_at=now)], 0)
    await event_log.append("job", job_id, [ev.JobStarted(job_id=job_id, attempt=1, worker_id="w1", started_at=now)])
    await event_log.append("job", job_id, [ev.JobCheckpointed(job_id=job_id, attempt=1, iteration=5, name="c1",
                                                              sha256="0" * 64, size=10, checkpointed_at=now)])
    if finish:
        await event_log.append("job", job_id, [ev.JobCompleted(job_id=job_id, attempt=1, result=result or {},
                                                               completed_at=utcnow())])


async def publish_progress(nc: Any, topology: Topology, job_id: str, iterations: range, total: int = 10) -> None:
    """Progress samples straight onto the telemetry stream (acknowledged, so reads see them)."""
    js = nc.jetstream()
    for i in iterations:
        sample = JobProgress(job_id=job_id, attempt=1, worker_id="w1", iteration=i, total=total, loss=1.0 / i,
                             metrics={"lr": 0.1}, at=utcnow())
        await js.publish(topology.telemetry("progress", job_id), encode(sample))


async def publish_episodes(nc: Any, topology: Topology, job_id: str, scores: list[float]) -> None:
    """Episode reports with a small move log each."""
    js = nc.jetstream()
    for number, score in enumerate(scores, 1):
        report = EpisodeReport(job_id=job_id, attempt=1, episode=number, score=score,
                               figures={"max_tile": 256.0 * number, "moves": 100.0 + number},
                               log=[{"move": 1, "action": "up", "reward": 4, "score": 4}], at=utcnow())
        await js.publish(topology.telemetry("episode", job_id), encode(report))


def assert_error(response, status: int, *words: str) -> None:
    """A JSON error body with the status and a message (never a 500)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status and body["detail"]
    text = response.text.lower()
    assert all(w.lower() in text for w in words), response.text
