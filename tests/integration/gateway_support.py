"""A real gateway for tests: uvicorn on a free port, a projector, the real scheduler and discovery in this process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from contracts.base import utcnow
from contracts.codec import encode
from contracts.commands import JobAccepted, SubmitJob
from contracts.dispatch import Assignment
from contracts.subjects import Topology
from contracts.telemetry import EpisodeReport, JobProgress
from eventstore.config import CommonSettings
from eventstore.log import JetStreamLog
from eventstore.micro import call, start_service
from eventstore.projection import ProjectionRunner
from eventstore.readmodels import all_projections
from eventstore.server import free_port
from eventstore.stores.base import ReadModelStore
from eventstore.stores.sqlite import SqliteStore
from gateway.app import create_app
from gateway.settings import GatewaySettings, Settings
from gateway.tokens import issue_token
from services.discovery.settings import DiscoverySettings
from tests.integration.control_plane import Plane, assignment_of, control_plane
from tests.integration.fake_worker import FakeWorker

ROLES = ("viewer", "operator", "admin")
WORKER = "w1"  # the worker `run_job` runs jobs on
# Workers registered over the API never send a heartbeat: nobody is declared lost while a test runs.
DISCOVERY = DiscoverySettings(lost_after_s=3600.0, forget_after_s=3600.0, tick_s=0.5, lease_ttl_s=1.0,
                              network_check_s=0)  # the LAN watch has tests of its own (test_lan_phone)


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
    plane: Plane | None = None  # the real scheduler and discovery (None: `services=False`)
    assignments: dict[str, Assignment] = field(default_factory=dict)  # what `run_job` ran, by job id
    _worker: FakeWorker | None = None

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
        assert await self.runner.wait_for(await self.log.last_seq(), timeout=60), "the projector did not catch up"

    async def worker(self) -> FakeWorker:
        """Worker `w1` (protocol-level, 16 slots), registered with the real discovery; started on first use."""
        if self._worker is None:
            assert self.plane is not None, "a stack without services runs no jobs"
            self._worker = await self.plane.worker(WORKER, slots=16)
        return self._worker


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
async def gateway_stack(nats_url: str, nc: Any, topology: Topology, tmp_path: Path, *, services: bool = True,
                        store: ReadModelStore | None = None, reader: ReadModelStore | None = None,
                        projector: bool = True, **gateway: Any) -> AsyncIterator[Stack]:
    """Streams, tokens of every role, a projector, the real scheduler and discovery, and the gateway on a free port.

    With `services=False` neither service runs (a test starts its own, or none, or writes the log itself);
    with `projector=False` no projector runs (a test starts the real one, or none).
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
    try:
        async with AsyncExitStack() as parts:
            plane = await parts.enter_async_context(control_plane(nats_url, topology, discovery=DISCOVERY)) \
                if services else None
            if projector:  # answers $SRV.PING as the projector service does
                pinged = await start_service(nc, topology, "projector", "0.0.0-test", {})
                parts.push_async_callback(pinged.stop)
            port = free_port()
            settings = Settings(common=CommonSettings(data_dir=str(tmp_path), nats_url=nats_url,
                                                      prefix=topology.prefix),
                                gateway=GatewaySettings(port=port, **{"auth_max_failures": 10_000, **gateway}))
            server, task = await serve(create_app(settings, store=reader), port)
            try:
                yield Stack(f"http://127.0.0.1:{port}", nc, event_log, topology, reader, runner, tokens, plane)
            finally:
                server.should_exit = True
                await task
    finally:
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        if own:
            await reader.close()
            await store.close()


async def run_job(stack: Stack, *, kind: str = "train", finish: bool = True, result: dict[str, Any] | None = None,
                  checkpoint_of: str | None = None) -> str:
    """A job's life through the real scheduler, worker `w1` reporting it: submitted, assigned, started,
    checkpointed at iteration 5, (completed with `result`). Returns the job's id."""
    worker = await stack.worker()
    fields = {"workload": "2048", "max_iterations": 10} if kind == "train" else {
        "workload": "2048-eval", "episodes": 3, "checkpoint_of": checkpoint_of}
    accepted = await call(stack.nc, stack.topology, SubmitJob(kind=kind, **fields), JobAccepted)
    assignment = stack.assignments[accepted.job_id] = await assignment_of(worker, accepted.job_id)
    assert (await worker.report_started(assignment)).accepted
    assert (await worker.report_checkpointed(assignment, 5)).accepted
    if finish:
        assert (await worker.report_finished(assignment, result=result or {})).accepted
    return accepted.job_id


async def publish_progress(nc: Any, topology: Topology, job_id: str, iterations: range, total: int = 10,
                           worker_id: str = "w1") -> None:
    """Progress samples straight onto the telemetry stream as `worker_id` sends them (acknowledged, so reads
    see them); `run_job`'s jobs run on w1."""
    js = nc.jetstream()
    for i in iterations:
        sample = JobProgress(job_id=job_id, attempt=1, worker_id=worker_id, iteration=i, total=total, loss=1.0 / i,
                             metrics={"lr": 0.1}, at=utcnow())
        await js.publish(topology.job_telemetry("progress", job_id, worker_id), encode(sample))


async def publish_episodes(nc: Any, topology: Topology, job_id: str, scores: list[float], *,
                           durations: bool = False, worker_id: str = "w1") -> None:
    """Episode reports with a small move log each (and `duration_s` figures, as 2048-eval reports them)."""
    js = nc.jetstream()
    for number, score in enumerate(scores, 1):
        figures = {"max_tile": 256.0 * number, "moves": 100.0 + number, **({"duration_s": 1.5} if durations else {})}
        report = EpisodeReport(job_id=job_id, attempt=1, episode=number, score=score, figures=figures,
                               log=[{"move": 1, "action": "up", "reward": 4, "score": 4, "t": 0.25}], at=utcnow())
        await js.publish(topology.job_telemetry("episode", job_id, worker_id), encode(report))


def assert_error(response, status: int, *words: str) -> None:
    """A JSON error body with the status and a message (never a 500)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status_code"] == status and body["detail"]
    text = response.text.lower()
    assert all(w.lower() in text for w in words), response.text
