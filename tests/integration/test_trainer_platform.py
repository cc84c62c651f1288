"""Workers against the real scheduler and discovery (separate processes, as `stoker up` runs them), on a
nats-server with the platform's users and permissions: each process connects with its role's credential."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio

from contracts.commands import JobAccepted, SubmitJob
from contracts.errors import Unavailable
from contracts.events import (
    JobAssigned,
    JobCheckpointed,
    JobCompleted,
    JobRequeued,
    JobStarted,
    WorkerDeregistered,
    WorkerLost,
)
from contracts.subjects import Topology
from contracts.telemetry import JobProgress
from eventstore.connect import connect
from eventstore.credentials import CredentialStore
from eventstore.log import JetStreamLog, StoredEvent
from eventstore.micro import call
from eventstore.server import NatsServer, reload_nats
from eventstore.telemetry import job_samples
from tests.integration.test_trainer_agent import wait_file, wait_gone
from tests.secured import SecuredServer, start_secured

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not all(importlib.util.find_spec(f"services.{s}.__main__") for s in ("scheduler", "discovery")),
    reason="needs the scheduler and discovery services")


@pytest_asyncio.fixture(scope="module")
async def secured(tmp_path_factory) -> AsyncIterator[SecuredServer]:
    """One authenticated nats-server for the module; each test admits its topology and workers."""
    running = await start_secured(tmp_path_factory.mktemp("secured"), Topology("tplatform"), workers=())
    yield running
    await running.close()
    running.server.stop()


@pytest_asyncio.fixture
async def nats_server(secured: SecuredServer, topology: Topology) -> NatsServer:
    """The authenticated server, its permissions written for this test's topology (a reload, no restart)."""
    secured.credentials.write_authorization(topology)
    await reload_nats(secured.data_dir)
    return secured.server


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer, secured: SecuredServer):
    """The test's own connection: the admin's (it creates the streams and reads everything)."""
    client = await connect(nats_server.url, "stoker-tests", credentials=secured.credential("admin"))
    yield client
    await client.close()


class Platform:
    """Scheduler, discovery and workers as processes on one test's topology, each with its credential."""

    def __init__(self, server: NatsServer, topology: Topology, base: Path, credentials: CredentialStore) -> None:
        self.server, self.topology, self.base, self.credentials = server, topology, base, credentials
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self, **extra: str) -> dict[str, str]:
        """The environment every stoker process of this test gets."""
        return {**os.environ, "STOKER_NATS_URL": self.server.url, "STOKER_PREFIX": self.topology.prefix,
                "STOKER_DATA_DIR": str(self.base / "data"), "STOKER_LOG_LEVEL": "warning",
                "STOKER_LOG_FORMAT": "json", "STOKER_DISCOVERY_LOST_AFTER_S": "2",
                "STOKER_DISCOVERY_TICK_S": "0.2", "STOKER_SCHEDULER_TICK_S": "0.2", **extra}

    def start(self, name: str, module: str, **extra: str) -> subprocess.Popen:
        """Start `python -m module` as `name` (a service connects as its role)."""
        (self.base / "logs").mkdir(parents=True, exist_ok=True)
        if "STOKER_NATS_CREDENTIALS" not in extra:
            extra["STOKER_NATS_CREDENTIALS"] = str(self.credentials.role_path(name))
        with (self.base / "logs" / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", module], env=self.env(**extra), cwd=ROOT, stdout=out,
                                    stderr=out, start_new_session=True)
        self.procs[name] = proc
        return proc

    async def worker(self, worker_id: str, slots: int = 1) -> subprocess.Popen:
        """A worker agent process with its own data dir (as on its own machine), admitted with its own
        credential (written to the authorization block and reloaded, as a join would)."""
        credential = self.credentials.ensure_worker(worker_id)
        self.credentials.write_authorization(self.topology)
        await reload_nats(self.credentials.root.parent)
        return self.start(worker_id, "services.trainer", STOKER_TRAINER_WORKER_ID=worker_id,
                          STOKER_TRAINER_SLOTS=str(slots), STOKER_TRAINER_DETECT_GPUS="false",
                          STOKER_TRAINER_HEARTBEAT_S="0.3", STOKER_TRAINER_STOP_GRACE_S="5",
                          STOKER_DATA_DIR=str(self.base / worker_id), STOKER_NATS_CREDENTIALS=str(credential))

    def stop(self) -> None:
        """SIGTERM everything, then SIGKILL what does not go."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest_asyncio.fixture
async def platform(nats_server, secured, event_log, topology, tmp_path) -> AsyncIterator[Platform]:
    """The real scheduler and discovery, running."""
    running = Platform(nats_server, topology, tmp_path, secured.credentials)
    running.start("scheduler", "services.scheduler")
    running.start("discovery", "services.discovery")
    try:
        yield running
    finally:
        running.stop()


async def submit(nc, topology: Topology, **fields) -> str:
    """SubmitJob, retried while the scheduler is still taking its lease."""
    for _ in range(200):
        try:
            return (await call(nc, topology, SubmitJob(**fields), JobAccepted)).job_id
        except Unavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("the scheduler never answered")


async def wait_event(log: JetStreamLog, aggregate: str, aggregate_id: str, match: Callable[[StoredEvent], bool],
                     timeout: float = 60.0) -> StoredEvent:
    """The first event of an aggregate (already stored or still to come) that matches."""
    async def find() -> StoredEvent:
        async for stored in log.subscribe(1, filter_subject=log.topology.events(aggregate, aggregate_id)):
            if match(stored):
                return stored
        raise AssertionError("unreachable")

    return await asyncio.wait_for(find(), timeout)


async def test_a_noop_job_runs_through_the_real_scheduler(platform, nc, event_log, topology):
    await platform.worker("pw1", slots=2)
    job_id = await submit(nc, topology, workload="noop")
    done = await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobCompleted))
    assert done.event.result == {"ok": True, "iteration": 1}
    events, _ = await event_log.load("job", job_id)
    assert [type(e.event).__name__ for e in events] == ["JobSubmitted", "JobAssigned", "JobStarted", "JobCompleted"]


async def test_a_killed_worker_s_job_resumes_elsewhere_from_its_checkpoint(platform, nc, event_log, topology):
    first = await platform.worker("pw-a")
    job_id = await submit(nc, topology, workload="sleep", max_iterations=120,
                          params={"step_s": 0.02, "checkpoint_every": 5})
    await wait_event(event_log, "job", job_id,
                     lambda s: isinstance(s.event, JobCheckpointed) and s.event.iteration >= 10)
    await platform.worker("pw-b")
    first.send_signal(signal.SIGKILL)
    first.wait()
    await wait_event(event_log, "worker", "pw-a", lambda s: isinstance(s.event, WorkerLost))
    await wait_event(event_log, "job", job_id,
                     lambda s: isinstance(s.event, JobRequeued) and s.event.reason == "worker_lost")
    started = await wait_event(event_log, "job", job_id,
                               lambda s: isinstance(s.event, JobStarted) and s.event.attempt == 2)
    events, _ = await event_log.load("job", job_id)
    last_checkpoint = max(e.event.iteration for e in events
                          if isinstance(e.event, JobCheckpointed) and e.event.attempt == 1)
    assert started.event.worker_id == "pw-b" and started.event.resumed_from == last_checkpoint
    done = await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobCompleted))
    assert done.event.attempt == 2 and done.event.result["resumed_from"] == last_checkpoint
    assert done.event.result["iteration"] == 120
    samples = [s for _seq, s in await job_samples(nc, topology, "progress", job_id, ["pw-a", "pw-b"], JobProgress)]
    second = [s.iteration for s in samples if s.attempt == 2]
    assert second and min(second) == last_checkpoint + 1  # it went on from the checkpoint, not from 0


async def test_a_job_dies_with_its_worker(platform, nc, event_log, topology, tmp_path):
    worker = await platform.worker("pw-c")
    pid_file = tmp_path / "pid"
    await submit(nc, topology, workload="tests.integration.test_trainer_workloads:write_pid_and_wait",
                 params={"pid_file": str(pid_file)})
    pid = int(await wait_file(pid_file))
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    await wait_gone(pid)  # the kernel ends it along with its zygote


async def test_a_clean_shutdown_costs_a_job_one_attempt(platform, nc, event_log, topology):
    leaving = await platform.worker("pw-d")
    job_id = await submit(nc, topology, workload="sleep", max_iterations=100_000,
                          params={"step_s": 0.02, "checkpoint_every": 10})
    await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobCheckpointed))
    leaving.send_signal(signal.SIGTERM)  # it checkpoints, says `interrupted`, and deregisters
    assert await asyncio.to_thread(leaving.wait, 60) == 0
    await wait_event(event_log, "worker", "pw-d", lambda s: isinstance(s.event, WorkerDeregistered))
    await platform.worker("pw-d")  # up again, same worker
    started = await wait_event(event_log, "job", job_id,
                               lambda s: isinstance(s.event, JobStarted) and s.event.attempt > 1)
    assert started.event.attempt == 2 and started.event.resumed_from is not None
    events, _ = await event_log.load("job", job_id)
    assert [(e.event.reason, e.event.attempt) for e in events if isinstance(e.event, JobRequeued)] == [
        ("shutdown", 2)]
    assert [e.event.attempt for e in events if isinstance(e.event, JobAssigned)] == [1, 2]  # none while it left


async def test_a_crashed_worker_s_job_is_requeued_as_worker_lost(nats_server, secured, nc, event_log, topology,
                                                                 tmp_path):
    # Discovery is slow to notice here: the worker is back (as a supervisor restarts it) before it is lost.
    running = Platform(nats_server, topology, tmp_path, secured.credentials)
    running.start("scheduler", "services.scheduler")
    running.start("discovery", "services.discovery", STOKER_DISCOVERY_LOST_AFTER_S="120")
    try:
        crashing = await running.worker("pw-e")
        job_id = await submit(nc, topology, workload="sleep", max_iterations=100_000, params={"step_s": 0.02})
        await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobStarted))
        crashing.send_signal(signal.SIGKILL)
        crashing.wait()
        await running.worker("pw-e")
        requeued = await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, JobRequeued))
        assert (requeued.event.reason, requeued.event.attempt) == ("worker_lost", 2)
    finally:
        running.stop()
