"""A protocol-level worker for integration tests: registers, heartbeats, consumes its dispatch queue, reports.

It speaks docs/protocol.md over a real NATS connection of its own and runs no job code: a test
either drives each report by hand (`next_message`, `report_started`, `report_finished`) or lets it
finish every assignment at once (`auto_complete=True`), which is how throughput is measured.

Also here, shared by the scheduler and discovery tests: `eventually`, `job_events`, and
`InProcess`, which runs a control-plane service on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time

import msgspec
import nats.errors
from nats.aio.client import Client

from contracts.base import utcnow
from contracts.codec import decode_message, encode
from contracts.commands import (
    DeregisterWorker,
    RegisterWorker,
    ReportAccepted,
    ReportJobCheckpointed,
    ReportJobFinished,
    ReportJobStarted,
    WorkerAccepted,
)
from contracts.dispatch import Assignment, DispatchMessage, StopAttempt
from contracts.events import Gpu, WorkerCapabilities
from contracts.subjects import Topology
from contracts.telemetry import WorkerHeartbeat
from eventstore.connect import connect
from eventstore.micro import call

FETCH_WAIT_S = 0.25


async def eventually(check, timeout: float = 15.0, what: str = "condition"):
    """Poll `check` (sync or async) until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)


async def job_events(event_log, job_id: str) -> list[str]:
    stored, _ = await event_log.load("job", job_id)
    return [s.type for s in stored]


class FakeWorker:
    """One worker, `slots` wide, with `gpus` GPUs and `labels`."""

    def __init__(self, url: str, topology: Topology, worker_id: str, *, slots: int = 1, gpus: int = 0,
                 labels: tuple[str, ...] = ("training", "evaluation"), heartbeat_s: float = 0.2,
                 auto_complete: bool = False, workloads: tuple[str, ...] | None = None,
                 workload_params: dict[str, dict] | None = None) -> None:
        self.url, self.topology, self.worker_id = url, topology, worker_id
        self.capabilities = WorkerCapabilities(
            hostname=f"fake-{worker_id}", cpu_cores=2, ram_mb=1024, slots=slots, labels=labels,
            gpus=tuple(Gpu(index=i, name="fake", memory_mb=1024) for i in range(gpus)), workloads=workloads,
            workload_params=workload_params)
        self.heartbeat_s, self.auto_complete = heartbeat_s, auto_complete
        self.nc: Client | None = None
        self.messages: asyncio.Queue[DispatchMessage] = asyncio.Queue()
        self.received: list[DispatchMessage] = []
        self.completed: list[str] = []
        self._seen: set[tuple[str, int, str]] = set()
        self._beating = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._consumer: asyncio.Task | None = None
        self._consuming = False

    async def start(self, *, register: bool = True) -> FakeWorker:
        """Connect, register, beat, and consume the dispatch queue."""
        self.nc = await connect(self.url, f"fake-{self.worker_id}")
        if register:
            await self.register()
        self._beating.set()
        self._tasks.append(asyncio.create_task(self._heartbeats()))
        self.connect_consumer()
        return self

    async def register(self, draining: bool = False) -> WorkerAccepted:
        """Send RegisterWorker (`draining`: as a worker that is shutting down does)."""
        command = RegisterWorker(worker_id=self.worker_id, capabilities=self.capabilities, draining=draining)
        return await call(self.nc, self.topology, command, WorkerAccepted)

    async def deregister(self) -> WorkerAccepted:
        """Send DeregisterWorker."""
        return await call(self.nc, self.topology, DeregisterWorker(worker_id=self.worker_id), WorkerAccepted)

    def pause_heartbeats(self) -> None:
        """Go silent (discovery will declare the worker lost)."""
        self._beating.clear()

    def resume_heartbeats(self) -> None:
        """Speak again."""
        self._beating.set()

    def connect_consumer(self) -> None:
        """Start pulling from the durable consumer `worker-<id>`."""
        if self._consumer is None:
            self._consuming = True
            self._consumer = asyncio.create_task(self._consume())

    async def disconnect_consumer(self) -> None:
        """Stop pulling; the durable consumer keeps what arrives meanwhile."""
        if self._consumer is None:
            return
        # A flag, not cancel(): on Python 3.11 wait_for inside fetch() can swallow a cancellation.
        self._consuming = False
        done, _ = await asyncio.wait({self._consumer}, timeout=3 * FETCH_WAIT_S)
        if not done:
            self._consumer.cancel()
        self._consumer = None

    async def close(self) -> None:
        """Stop everything and disconnect (no deregistration: like a crash, minus the heartbeat race)."""
        await self.disconnect_consumer()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a cancellation swallowed inside nats-py must not hang a test's teardown
            await asyncio.wait(tasks, timeout=2.0)
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.close()

    async def next_message(self, timeout: float = 10.0) -> DispatchMessage:
        """The next dispatch message (duplicates by job, attempt and kind are dropped)."""
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def next_assignment(self, timeout: float = 10.0) -> Assignment:
        """The next message, which must be an Assignment."""
        message = await self.next_message(timeout)
        assert isinstance(message, Assignment), message
        return message

    async def report(self, command, timeout: float = 5.0) -> ReportAccepted:
        """Send one report, retrying while no scheduler leads (a takeover in progress)."""
        for _ in range(int(timeout / 0.1)):
            try:
                return await call(self.nc, self.topology, command, ReportAccepted, timeout=timeout)
            except Exception as exc:  # Unavailable while nobody holds the lease
                if getattr(exc, "code", None) != 503:
                    raise
                await asyncio.sleep(0.1)
        raise TimeoutError(f"no scheduler took {type(command).__name__}")

    async def report_started(self, job: Assignment | StopAttempt) -> ReportAccepted:
        """ReportJobStarted for an assignment."""
        return await self.report(ReportJobStarted(job_id=job.job_id, attempt=job.attempt, worker_id=self.worker_id))

    async def report_checkpointed(self, job: Assignment, iteration: int, sha256: str = "a" * 64) -> ReportAccepted:
        """ReportJobCheckpointed with a made-up object."""
        return await self.report(ReportJobCheckpointed(
            job_id=job.job_id, attempt=job.attempt, worker_id=self.worker_id, iteration=iteration,
            name=f"{job.job_id}/{job.attempt}-{iteration}", sha256=sha256, size=10))

    async def report_finished(self, job: Assignment | StopAttempt, outcome: str = "completed",
                              **fields) -> ReportAccepted:
        """ReportJobFinished with an outcome."""
        return await self.report(ReportJobFinished(job_id=job.job_id, attempt=job.attempt,
                                                   worker_id=self.worker_id, outcome=outcome, **fields))

    async def _heartbeats(self) -> None:
        subject = self.topology.telemetry("heartbeat", self.worker_id)
        while True:
            await self._beating.wait()
            beat = WorkerHeartbeat(worker_id=self.worker_id, at=utcnow())
            with contextlib.suppress(nats.errors.ConnectionClosedError):
                await self.nc.publish(subject, encode(beat))
            await asyncio.sleep(self.heartbeat_s)

    async def _consume(self) -> None:
        js = self.nc.jetstream()
        sub = await js.pull_subscribe(self.topology.dispatch(self.worker_id), durable=f"worker-{self.worker_id}",
                                      stream=self.topology.dispatch_stream)
        try:
            while self._consuming:
                try:
                    batch = await sub.fetch(64, timeout=FETCH_WAIT_S)
                except TimeoutError:
                    continue
                for msg in batch:
                    await self._handle(msg.data)
                    await msg.ack()
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _handle(self, data: bytes) -> None:
        try:
            message = decode_message(DispatchMessage, data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        key = (message.job_id, message.attempt, type(message).__name__)
        if key in self._seen:
            return
        self._seen.add(key)
        self.received.append(message)
        if self.auto_complete and isinstance(message, Assignment):
            task = asyncio.create_task(self._run_noop(message))  # the scheduler keeps us within our slots
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)
            return
        self.messages.put_nowait(message)

    async def _run_noop(self, job: Assignment) -> None:
        await self.report_started(job)
        await self.report_finished(job)
        self.completed.append(job.job_id)


class InProcess:
    """A control-plane service (`SchedulerService`, `DiscoveryService`) run on this loop with its own connection."""

    def __init__(self, url: str, topology: Topology, service_type, settings, name: str, *,
                 standby: bool = False) -> None:
        self.url, self.topology, self.service_type = url, topology, service_type
        self.settings, self.name = settings, name
        self.standby = standby  # don't wait for it to serve (another instance leads)
        self.service = None
        self.stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._nc: Client | None = None

    async def __aenter__(self):
        """Start the service; returns it (its state is there to inspect)."""
        from eventstore.config import CommonSettings
        from eventstore.log import JetStreamLog
        from eventstore.service import ServiceContext

        self._nc = await connect(self.url, f"test-{self.name}")
        event_log = JetStreamLog(self._nc, self.topology)
        await event_log.ensure_streams()
        ctx = ServiceContext(self.name, CommonSettings(prefix=self.topology.prefix), self._nc, event_log, self.stop)
        self.service = self.service_type(ctx, self.settings)
        self._task = asyncio.create_task(self.service.run())
        if not self.standby:
            await eventually(lambda: self.service.serving.is_set() or self._task.done(), what=f"{self.name} serving")
            if self._task.done():
                self._task.result()  # raise what it died of
        return self.service

    async def __aexit__(self, *exc) -> None:
        """Stop it the way SIGTERM does, then close its connection."""
        await self.shutdown()

    async def shutdown(self) -> None:
        """Set the stop signal and wait for the service to finish (re-raising what it died of)."""
        self.stop.set()
        try:
            if self._task is not None:
                await asyncio.wait_for(self._task, 20)
        finally:
            if self._nc is not None and not self._nc.is_closed:
                await self._nc.close()

    @property
    def crashed(self) -> bool:
        """Whether the service's task ended on its own."""
        return self._task is not None and self._task.done() and not self.stop.is_set()
