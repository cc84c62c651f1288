"""The worker agent: joins, heartbeats, takes assignments from its durable consumer, runs them, leaves."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import msgspec
import psutil
from nats.aio.client import Client
from nats.aio.msg import Msg

from contracts.base import utcnow
from contracts.codec import encode
from contracts.commands import DeregisterWorker, RegisterWorker, ReportJobFinished, WorkerAccepted
from contracts.dispatch import Assignment, StopAttempt
from contracts.errors import DomainError
from contracts.events import WorkerCapabilities
from contracts.subjects import Topology
from contracts.telemetry import WorkerHeartbeat
from eventstore.micro import call
from eventstore.observability import consumer_span, get_logger
from services.trainer.blobstore import CheckpointStore
from services.trainer.consumer import DispatchConsumer
from services.trainer.describe import describe_workloads
from services.trainer.outbox import AttemptLog, deliver
from services.trainer.outcome import SHUTDOWN
from services.trainer.pool import WarmPool
from services.trainer.runner import Deps, JobRunner
from services.trainer.settings import TrainerSettings
from services.trainer.telemetry import TelemetryPublisher
from services.trainer.threads import thread_environment, usable_cores
from services.trainer.workloads_registry import Registry, registered

log = get_logger(component="agent")
SEEN_LIMIT = 100_000
Key = tuple[str, int]
_dispatch_decoder = msgspec.json.Decoder(Assignment | StopAttempt)


class Agent:
    """One worker: its slots, its running attempts, and its conversation with discovery and the scheduler."""

    def __init__(self, nc: Client, topology: Topology, settings: TrainerSettings, worker_id: str,
                 capabilities: WorkerCapabilities, state_dir: Path, replicas: int = 1,
                 on_ready: Callable[[], object] | None = None) -> None:
        self.nc, self.topology, self.settings = nc, topology, settings
        self.on_ready = on_ready or (lambda: None)  # registered and consuming (the service manager's READY=1)
        self.worker_id, self.capabilities = worker_id, capabilities
        pool = WarmPool(settings.preload, capabilities.slots if settings.warm else 0, settings.max_zygotes)
        self.deps = Deps(nc, topology, settings, worker_id, pool, CheckpointStore(nc.jetstream(),
                         topology.checkpoint_bucket, replicas), Registry(settings.target_modules),
                         AttemptLog(state_dir / "attempts"), state_dir / "spool", TelemetryPublisher(nc))
        self.runners: dict[Key, JobRunner] = {}
        self.tasks: set[asyncio.Task] = set()
        self.seen: OrderedDict[Key, None] = OrderedDict()
        self.early_stops: set[Key] = set()
        self.leaving = asyncio.Event()
        self.log = log.bind(worker_id=worker_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set, then shut down gracefully."""
        # Before the first job process exists: its OpenMP pool is sized when torch loads (threads.py).
        os.environ.update(thread_environment(os.environ, usable_cores(), self.capabilities.slots))
        await self.deps.pool.start()
        try:
            self._recover()
            if not await self.register(stop):
                return
            consumer = DispatchConsumer(self.nc, self.topology, self.worker_id, self.on_dispatch,
                                        self.settings.dispatch_batch)
            await consumer.ensure()
            stop_consuming = asyncio.Event()
            background = [asyncio.create_task(consumer.run(stop_consuming)),
                          asyncio.create_task(self._heartbeats(stop))]
            describing = asyncio.create_task(self.describe(stop)) if self.settings.describe_workloads else None
            self.log.info("worker ready", slots=self.capabilities.slots, labels=list(self.capabilities.labels))
            self.on_ready()
            await stop.wait()
            stop_consuming.set()
            if describing is not None:
                describing.cancel()
                await asyncio.gather(describing, return_exceptions=True)
            # Take nothing more: what is still on its way stays unacknowledged for the next run (or is
            # requeued by the scheduler when this worker deregisters).
            background[0].cancel()
            await self.shutdown()
            background[1].cancel()
            await asyncio.gather(*background, return_exceptions=True)
        finally:
            await self.deps.pool.close()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def register(self, stop: asyncio.Event) -> bool:
        """RegisterWorker until discovery answers; False if asked to stop first."""
        command = RegisterWorker(worker_id=self.worker_id, capabilities=self.capabilities,
                                 draining=self.leaving.is_set())
        delay = 0.1
        while not stop.is_set():
            try:
                reply = await call(self.nc, self.topology, command, WorkerAccepted, timeout=5.0)
                self.log.info("registered", status=reply.status)
                return True
            except DomainError as exc:
                self.log.warning("registration not answered yet, retrying", error=exc.message)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 5.0)
        return False

    async def describe(self, stop: asyncio.Event) -> None:
        """Offer the parameter schemas of this worker's registered workloads (registering again with them)."""
        targets = registered()
        schemas = await asyncio.to_thread(describe_workloads, {n: targets[n] for n in self.capabilities.workloads or ()
                                                               if n in targets})
        if not schemas or stop.is_set() or self.leaving.is_set():
            return
        self.capabilities = msgspec.structs.replace(self.capabilities, workload_params=schemas)
        command = RegisterWorker(worker_id=self.worker_id, capabilities=self.capabilities, draining=False)
        await self._tell_discovery(command, "workload description")
        self.log.info("workloads described", workloads=sorted(schemas))

    async def announce_draining(self) -> None:
        """Tell discovery this worker takes no new jobs, before its running ones are stopped.

        The scheduler then requeues each attempt that ends `interrupted` here to another worker (or
        keeps it queued), never back to this one. Best effort, like deregistering.
        """
        command = RegisterWorker(worker_id=self.worker_id, capabilities=self.capabilities, draining=True)
        await self._tell_discovery(command, "draining")

    async def deregister(self) -> None:
        """DeregisterWorker, a few tries (best effort: discovery notices silence anyway)."""
        await self._tell_discovery(DeregisterWorker(worker_id=self.worker_id), "deregistration")

    async def _tell_discovery(self, command: RegisterWorker | DeregisterWorker, what: str) -> None:
        for _ in range(3):
            try:
                await call(self.nc, self.topology, command, WorkerAccepted, 3.0)
                return
            except DomainError as exc:
                self.log.warning(f"{what} not answered", error=exc.message)

    def heartbeat(self) -> WorkerHeartbeat:
        """What this worker runs and how loaded it is, now."""
        running = tuple(job_id for job_id, _attempt in self.runners)
        pids = {job_id: r.child.pid for (job_id, _a), r in self.runners.items() if r.child is not None}
        return WorkerHeartbeat(worker_id=self.worker_id, running=running, pids=pids,
                               free_slots=max(0, self.capabilities.slots - len(running)),
                               cpu_percent=psutil.cpu_percent(None), memory_percent=psutil.virtual_memory().percent,
                               at=utcnow())

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        reconnects = self.nc.stats.get("reconnects", 0)
        while not stop.is_set():
            with contextlib.suppress(Exception):
                await self.nc.publish(self.topology.telemetry("heartbeat", self.worker_id), encode(self.heartbeat()))
            if self.nc.stats.get("reconnects", 0) != reconnects:
                # Long enough away to be forgotten: say who we are again.
                reconnects = self.nc.stats.get("reconnects", 0)
                self._spawn(self.register(stop))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.heartbeat_s)

    def _remember(self, key: Key) -> bool:
        """Mark an attempt as seen; False when it was seen already (a redelivery)."""
        if key in self.seen:
            return False
        self.seen[key] = None
        while len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)
        return True

    async def on_dispatch(self, msg: Msg) -> None:
        """One message on this worker's dispatch subject."""
        try:
            message = _dispatch_decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.log.error("malformed dispatch message dropped", error=str(exc))
            await msg.term()
            return
        if message.worker_id != self.worker_id:
            self.log.warning("dispatch message for another worker dropped", to=message.worker_id)
        elif isinstance(message, Assignment):
            if self.leaving.is_set():
                return  # not acknowledged: delivered again to this worker's next run
            with consumer_span("stoker.assignment", msg.headers, **{"stoker.job_id": message.job_id,
                                                                     "stoker.attempt": message.attempt}):
                self._accept(message)  # its runner task continues the submission's trace
        else:
            self._stop_attempt(message)
        await msg.ack()

    def _accept(self, assignment: Assignment) -> None:
        key = (assignment.job_id, assignment.attempt)
        if not self._remember(key):
            return  # a redelivery
        self.deps.attempts.record(assignment)
        runner = JobRunner(self.deps, assignment, self._release)
        self.runners[key] = runner
        if key in self.early_stops:
            self.early_stops.discard(key)
            runner.stop("requested")
        self._spawn(runner.run())

    def _stop_attempt(self, stop: StopAttempt) -> None:
        key = (stop.job_id, stop.attempt)
        runner = self.runners.get(key)
        if runner is not None:
            self.log.info("stopping attempt", job_id=stop.job_id, attempt=stop.attempt, reason=stop.reason)
            runner.stop(stop.reason or "requested")
        elif key not in self.seen:
            self.early_stops.add(key)  # its assignment may still be on the way

    def _release(self, runner: JobRunner) -> None:
        self.runners.pop(runner.key, None)
        if runner.refused:
            self.seen.pop(runner.key, None)  # a forged copy must not shadow the real assignment, should it come

    def _recover(self) -> None:
        """Settle attempts a previous run of this worker left: resend their outcome, or say they were cut off."""
        for job_id, attempt, finished in self.deps.attempts.leftovers():
            self._remember((job_id, attempt))
            report = finished or ReportJobFinished(
                job_id=job_id, attempt=attempt, worker_id=self.worker_id, outcome="interrupted",
                error="the worker restarted while this attempt ran", retryable=True, crashed=True)
            self.log.info("settling attempt left by a previous run", job_id=job_id, attempt=attempt,
                          outcome=report.outcome)
            self._spawn(self._settle(report))

    async def _settle(self, report: ReportJobFinished) -> None:
        await deliver(self.nc, self.topology, report, self.settings.report_timeout_s)
        self.deps.attempts.forget(report.job_id, report.attempt)

    async def shutdown(self) -> None:
        """Stop taking work, stop running attempts (final checkpoint, outcome interrupted), leave."""
        self.leaving.set()
        self.log.info("worker stopping", running=len(self.runners))
        await self.announce_draining()
        for runner in list(self.runners.values()):
            runner.stop(SHUTDOWN)
        if self.tasks:
            _done, pending = await asyncio.wait(set(self.tasks), timeout=self.settings.stop_grace_s + 10)
            for task in pending:
                task.cancel()
        await self.deregister()
        self.log.info("worker stopped")
