"""The real control plane in this process: discovery and a leading scheduler, each `InProcess` on its own connection.

The gateway tests (`gateway_support.gateway_stack`), the scheduler's service tests and the agent tests
run these rather than stand-ins that re-implement them: a copy of a service drifts from it (one stopped
jobs at attempt 0 while the real decider uses the current attempt). Both follow the test's topology, so
they append to the very streams the test's `event_log` reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from contracts.dispatch import Assignment
from contracts.subjects import Topology
from services.discovery.adapter import DiscoveryService
from services.discovery.settings import DiscoverySettings
from services.scheduler.adapter import SchedulerService
from services.scheduler.board import JobBoard
from services.scheduler.settings import SchedulerSettings
from tests.integration.fake_worker import FakeWorker, InProcess, eventually

SCHEDULER = SchedulerSettings(lease_ttl_s=1.0, tick_s=0.1, retry_backoff_s=0.1, snapshot_every=10_000)
DISCOVERY = DiscoverySettings(heartbeat_s=0.2, lost_after_s=1.0, tick_s=0.1, lease_ttl_s=1.0,
                              network_check_s=0)  # the LAN watch has tests of its own (test_lan_phone)


def leading(service: SchedulerService) -> bool:
    """Whether a scheduler leads with its endpoints registered."""
    return service.serving.is_set()


class Plane:
    """Discovery and one leading scheduler in this process, plus the protocol-level workers a test starts."""

    def __init__(self, url: str, topology: Topology, scheduler: SchedulerSettings = SCHEDULER,
                 discovery: DiscoverySettings = DISCOVERY) -> None:
        self.url, self.topology = url, topology
        self.settings = scheduler
        self._discovery = InProcess(url, topology, DiscoveryService, discovery, "discovery")
        self._scheduler = InProcess(url, topology, SchedulerService, scheduler, "scheduler")
        self.discovery: DiscoveryService | None = None
        self.scheduler: SchedulerService | None = None
        self.workers: list[FakeWorker] = []

    async def start(self) -> Plane:
        """Start discovery, then the scheduler, and wait until it leads."""
        self.discovery = await self._discovery.__aenter__()
        await self._lead()
        return self

    async def stop(self) -> None:
        """Close the workers started here, then stop both services as SIGTERM stops them."""
        try:
            for worker in self.workers:
                await worker.close()
            self.workers.clear()
            await self._scheduler.shutdown()
        finally:
            await self._discovery.shutdown()

    async def _lead(self) -> None:
        self.scheduler = await self._scheduler.__aenter__()
        await eventually(lambda: leading(self.scheduler), what="scheduler leading")

    @asynccontextmanager
    async def scheduler_outage(self) -> AsyncIterator[None]:
        """No scheduler while the block runs (the leader stops as on SIGTERM); then a new one takes over."""
        await self._scheduler.shutdown()
        try:
            yield
        finally:
            self._scheduler = InProcess(self.url, self.topology, SchedulerService, self.settings, "scheduler-2")
            await self._lead()

    @property
    def board(self) -> JobBoard:
        """The leader's live board."""
        return self.scheduler.scheduler.board.state

    async def worker(self, worker_id: str, **kw) -> FakeWorker:
        """A fake worker, registered, that the scheduler already knows as healthy (closed with the plane)."""
        worker = await FakeWorker(self.url, self.topology, worker_id, **kw).start()
        self.workers.append(worker)
        await self.known(worker_id)
        return worker

    async def known(self, worker_id: str) -> None:
        """Wait until the scheduler knows `worker_id` as healthy (registered with discovery, folded by the leader)."""
        await eventually(lambda: getattr(self.board.workers.get(worker_id), "health", None) == "healthy",
                         what=f"{worker_id} known to the scheduler")


async def assignment_of(worker: FakeWorker, job_id: str, timeout: float = 15.0) -> Assignment:
    """The assignment of `job_id` among what `worker` received (whatever else it got stays queued)."""
    def found() -> Assignment | None:
        return next((m for m in worker.received if isinstance(m, Assignment) and m.job_id == job_id), None)

    return await eventually(found, timeout, what=f"the assignment of {job_id}")


@asynccontextmanager
async def control_plane(url: str, topology: Topology, *, scheduler: SchedulerSettings = SCHEDULER,
                        discovery: DiscoverySettings = DISCOVERY) -> AsyncIterator[Plane]:
    """Discovery and a scheduler that leads, until the block ends (then stopped as SIGTERM stops them)."""
    plane = Plane(url, topology, scheduler, discovery)
    try:
        yield await plane.start()
    finally:
        await plane.stop()
