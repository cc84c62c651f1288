"""Discovery on NATS: the lease, the micro endpoints, the heartbeat subscription and the timer. Thin.

A discovery that does not hold the lease does nothing but wait for it: it registers no endpoints
and reads no heartbeats, so requests always reach the acting one. On taking over it folds the
worker events and gives every healthy worker `lost_after_s` from that moment to be heard from.
"""

from __future__ import annotations

import asyncio

import msgspec
from nats.aio.msg import Msg
from nats.micro.service import Service

from contracts.codec import decode_message
from contracts.commands import DeregisterWorker, RegisterWorker
from contracts.telemetry import WorkerHeartbeat
from eventstore.follow import cancel_and_wait, wait_for_any
from eventstore.lease import Lease, holder_name, lead_whenever_held
from eventstore.micro import start_service
from eventstore.observability import get_logger
from eventstore.service import ServiceContext
from eventstore.streams import open_kv
from services.discovery.domain import Timing
from services.discovery.handlers import Discovery
from services.discovery.lan import InterfaceSource, LanPresence
from services.discovery.settings import DiscoverySettings

log = get_logger(component="discovery")
VERSION = "0.1.0"
LEASE_KEY = "discovery"


class DiscoveryService:
    """One discovery process: waits for the lease, then keeps the registry until it loses it or stops."""

    def __init__(self, ctx: ServiceContext, settings: DiscoverySettings,
                 interfaces: InterfaceSource | None = None) -> None:
        self.ctx, self.settings = ctx, settings
        self.interfaces = interfaces  # where the LAN addresses come from (None: psutil)
        self.lan: LanPresence | None = None
        self.holder = holder_name()
        self.discovery: Discovery | None = None
        self.serving = asyncio.Event()  # acting, with endpoints registered

    async def run(self) -> None:
        """Lead whenever the lease is ours, until `ctx.stop`."""
        kv = await open_kv(self.ctx.nc.jetstream(), self.ctx.topology.lease_bucket)
        lease = Lease(kv, LEASE_KEY, self.holder, self.settings.lease_ttl_s)
        await lead_whenever_held(lease, self.ctx.stop, self._lead)

    async def _lead(self, lease: Lease) -> None:
        lost = asyncio.Event()
        keeper = asyncio.create_task(lease.keep(lost), name="discovery-lease")
        timing = Timing(lost_after_s=self.settings.lost_after_s, forget_after_s=self.settings.forget_after_s)
        self.discovery = discovery = Discovery(self.ctx.log, timing)
        heartbeats = service = timer = watcher = None
        self.lan = lan = (LanPresence(self.ctx.log, self.settings, self.interfaces, self.ctx.settings.nats_ca)
                          if self.settings.network_check_s > 0 else None)
        try:
            await discovery.load()
            log.info("leading", holder=self.holder, workers=len(discovery.state.workers))
            heartbeats = await self.ctx.nc.subscribe(self.ctx.topology.telemetry("heartbeat", "*"),
                                                     cb=self._on_heartbeat)
            service = await self._serve(discovery)
            timer = asyncio.create_task(self._tick(), name="discovery-tick")
            if lan is not None:
                watcher = asyncio.create_task(lan.run(), name="discovery-lan")
            await wait_for_any(self.ctx.stop, lost)
        finally:
            self.serving.clear()
            await cancel_and_wait([t for t in (timer, keeper, watcher) if t is not None])
            if lan is not None:
                await lan.stop()  # goodbye packets before the next discovery announces
            if service is not None:
                await service.stop()
            if heartbeats is not None:
                await heartbeats.unsubscribe()
            if self.ctx.stop.is_set():
                await lease.release()
            log.info("stopped leading", holder=self.holder, lease_lost=lost.is_set())

    async def _serve(self, discovery: Discovery) -> Service:
        service = await start_service(self.ctx.nc, self.ctx.topology, "discovery", VERSION, {
            "register": (RegisterWorker, discovery.register),
            "deregister": (DeregisterWorker, discovery.deregister),
        }, description="stoker discovery: worker registry")
        self.serving.set()
        return service

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = decode_message(WorkerHeartbeat, msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.debug("ignoring malformed heartbeat", subject=msg.subject)
            return
        if msg.subject.rsplit(".", 1)[-1] != beat.worker_id:
            return  # a worker speaks only for itself
        try:
            await self.discovery.heartbeat(beat)
        except Exception:
            log.exception("heartbeat handling failed", worker_id=beat.worker_id)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                await self.discovery.tick()
            except Exception:
                log.exception("tick failed")
