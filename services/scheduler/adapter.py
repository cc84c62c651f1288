"""The scheduler on NATS: lease, micro endpoints, the log follower, the timer. Thin: the work is in handlers.

Every process follows the log (a hot standby). Only the lease holder registers the micro endpoints
`submit`, `stop`, `confirm` and `report`, so commands always reach the leader; while nobody leads (a takeover
takes about `lease_ttl_s`) a caller gets "no responders" at once and retries.
"""

from __future__ import annotations

import asyncio
import contextlib

from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from contracts.commands import ConfirmAssignment, JobReport, RestartStalledJob, StopJob, SubmitJob
from eventstore.dispatch import JetStreamDispatch
from eventstore.follow import wait_for_any
from eventstore.lease import Lease, holder_name
from eventstore.micro import endpoint_subject, handle_request
from eventstore.observability import get_logger
from eventstore.service import ServiceContext
from eventstore.streams import open_kv
from services.scheduler.board import JobBoard
from services.scheduler.handlers import Scheduler
from services.scheduler.live import LiveBoard
from services.scheduler.settings import SchedulerSettings
from services.scheduler.snapshot import SnapshotStore

log = get_logger(component="scheduler")
VERSION = "0.1.0"
LEASE_KEY = "scheduler"


class SchedulerService:
    """One scheduler process: standby until it holds the lease, then the leader until it loses it."""

    def __init__(self, ctx: ServiceContext, settings: SchedulerSettings) -> None:
        self.ctx, self.settings = ctx, settings
        self.scheduler: Scheduler | None = None
        self.holder = holder_name()
        self._requests: set[asyncio.Task] = set()
        self.serving = asyncio.Event()  # leading with endpoints registered

    async def run(self) -> None:
        """Follow the log, lead whenever the lease is ours, stop on `ctx.stop`."""
        js = self.ctx.nc.jetstream()
        leases = await open_kv(js, self.ctx.topology.lease_bucket)
        snapshots = await open_kv(js, self.ctx.topology.snapshot_bucket)
        board = LiveBoard(self.ctx.log, SnapshotStore(snapshots, LEASE_KEY, JobBoard))
        dispatch = JetStreamDispatch(self.ctx.nc, self.ctx.topology, self.settings.dispatch_retries)
        self.scheduler = Scheduler(board, self.settings, dispatch)
        committer = asyncio.create_task(self.scheduler.committer.run(), name="scheduler-commit")
        await board.start()
        lease = Lease(leases, LEASE_KEY, self.holder, self.settings.lease_ttl_s)
        try:
            while not self.ctx.stop.is_set():
                if await lease.wait_acquired(self.ctx.stop):
                    await self._lead(lease)
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            await board.stop()

    async def _lead(self, lease: Lease) -> None:
        scheduler = self.scheduler
        lost = asyncio.Event()
        keeper = asyncio.create_task(lease.keep(lost), name="scheduler-lease")
        log.info("leading", holder=self.holder)
        try:
            await scheduler.lead()
        except TimeoutError:
            log.warning("could not catch up with the log; standing by")
            keeper.cancel()
            return
        await self._serve_until(lost)
        scheduler.step_down()
        if self.ctx.stop.is_set():
            await self._shutdown(lease, keeper)
            return
        keeper.cancel()
        log.warning("stepping down; rebuilding the board from the log", lease_lost=lost.is_set())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(scheduler.committer.drained(), 30.0)  # appends still in the air land first
        await scheduler.board.rebuild()

    async def _serve_until(self, lost: asyncio.Event) -> None:
        """Serve commands and tick until we stop, lose the lease, or an append fails."""
        service = await self._serve()
        self.serving.set()
        timer = asyncio.create_task(self._tick(), name="scheduler-tick")
        await wait_for_any(self.ctx.stop, lost, self.scheduler.failed)
        timer.cancel()
        self.serving.clear()
        await service.stop()

    async def _shutdown(self, lease: Lease, keeper: asyncio.Task) -> None:
        scheduler = self.scheduler
        if self._requests:
            await asyncio.wait(set(self._requests), timeout=5.0)
        try:
            if await scheduler.quiesce():
                await scheduler.board.save_snapshot()
        except Exception:
            log.exception("could not write the shutdown snapshot; the next start replays more of the log")
        await scheduler.drain_dispatch()
        keeper.cancel()
        await lease.release()
        log.info("stopped leading", holder=self.holder)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                self.scheduler.run_tick()
                await self.scheduler.snapshot_if_due()
            except Exception:
                log.exception("tick failed")

    async def _serve(self) -> Service:
        topology = self.ctx.topology
        service = await add_service(self.ctx.nc, name=topology.service_name("scheduler"), version=VERSION,
                                    description="stoker scheduler: job queue, placement, retries, stop")
        scheduler = self.scheduler
        endpoints = {"submit": (SubmitJob, scheduler.submit), "stop": (StopJob, scheduler.stop),
                     "confirm": (ConfirmAssignment, scheduler.confirm), "report": (JobReport, scheduler.report),
                     "restart": (RestartStalledJob, scheduler.restart)}
        for verb, (command_type, handler) in endpoints.items():
            subject = endpoint_subject(topology, "scheduler", verb, command_type)

            async def on_request(request: Request, command_type=command_type, handler=handler,
                                 subject=subject) -> None:
                # Handle each request in its own task: a micro endpoint awaits its callback, and a
                # command waits for its append, so awaiting here would serialise every command.
                task = asyncio.create_task(handle_request(request, command_type, handler, subject))
                self._requests.add(task)
                task.add_done_callback(self._requests.discard)

            await service.add_endpoint(name=verb, subject=subject, handler=on_request)
        return service
