"""The monitor on NATS: the sampling loop on every machine, and (role `alert`) the lease-held alerter. Thin.

Every monitor publishes its machine's `HostSample` to `stoker.telemetry.host.<host_id>` each `interval_s`.
A monitor of role `alert` (the one `stoker up` runs) also competes for the `monitor` lease; the holder
reads every host's samples, the workers' heartbeats (which jobs run) and job progress, and appends
the alert events. A standby keeps sampling and waits for the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import msgspec
from nats.aio.msg import Msg

from contracts.base import utcnow
from contracts.codec import decode_message
from contracts.commands import RestartStalledJob, StalledJobRestarted
from contracts.telemetry import HostSample, JobProgress, WorkerHeartbeat
from eventstore.follow import cancel_and_wait, wait_for_any
from eventstore.lease import Lease, holder_name, lead_whenever_held
from eventstore.micro import call
from eventstore.observability import get_logger
from eventstore.service import ServiceContext
from eventstore.streams import open_kv
from eventstore.telemetry import publish_sample
from services.monitor.handlers import Alerter
from services.monitor.sampler import PsutilSampler, Sampler, expected_gpu_count, local_host_id
from services.monitor.settings import MonitorSettings
from services.monitor.webhooks import Webhooks

log = get_logger(component="monitor")
LEASE_KEY = "monitor"


class MonitorService:
    """One monitor process: samples this machine; with role `alert`, decides alerts while it holds the lease."""

    def __init__(self, ctx: ServiceContext, settings: MonitorSettings, sampler: Sampler | None = None) -> None:
        self.ctx, self.settings = ctx, settings
        self.host_id = settings.host_id or local_host_id(ctx.settings.data_path)
        if sampler is None:
            sampler = PsutilSampler(self.host_id, [ctx.settings.data_path, *settings.paths],
                                    expected_gpus=expected_gpu_count(settings.expected_gpus_file))
        self.sampler = sampler
        self.alerter: Alerter | None = None
        self.webhooks: Webhooks | None = None
        self.serving = asyncio.Event()  # sampling, and (role alert) acting as the alerter
        self.published = 0

    async def run(self) -> None:
        """Sample until `ctx.stop`; lead the alerts whenever the lease is ours."""
        sampling = asyncio.create_task(self._sample_forever(), name="monitor-sample")
        try:
            if self.settings.role == "alert":
                await self._alert_while_leading()
            else:
                self.serving.set()
                await self.ctx.stop.wait()
        finally:
            await cancel_and_wait([sampling])
            self.sampler.close()

    async def _sample_forever(self) -> None:
        topology = self.ctx.topology
        while True:
            try:
                sample = await asyncio.to_thread(self.sampler.sample, utcnow())
                await publish_sample(self.ctx.nc, topology, "host", self.host_id, sample)
                self.published += 1
            except Exception:
                log.exception("sampling failed", host_id=self.host_id)
            await asyncio.sleep(self.settings.interval_s)

    async def _alert_while_leading(self) -> None:
        kv = await open_kv(self.ctx.nc.jetstream(), self.ctx.topology.lease_bucket)
        lease = Lease(kv, LEASE_KEY, holder_name(), self.settings.lease_ttl_s)
        await lead_whenever_held(lease, self.ctx.stop, self._lead)

    async def _lead(self, lease: Lease) -> None:
        lost = asyncio.Event()
        keeper = asyncio.create_task(lease.keep(lost), name="monitor-lease")
        s = self.settings
        self.webhooks = webhooks = Webhooks(s.webhooks)
        self.alerter = alerter = Alerter(self.ctx.log, s.rules, missing_after_s=s.missing_after_s,
                                         stall_after_s=s.stall_after_s, notify=webhooks.send,
                                         restart=self._ask_restart)
        subs, timer = [], None
        try:
            await alerter.load()
            log.info("alerting", open_alerts=len(alerter.state.open), rules=len(s.rules))
            t = self.ctx.topology
            feeds = ((t.host_samples("*"), self._on(HostSample, "host_id", alerter.sample)),
                     (t.telemetry("heartbeat", "*"), self._on(WorkerHeartbeat, "worker_id", alerter.heartbeat)),
                     (t.job_telemetry("progress"), self._on_progress(alerter)))
            for subject, cb in feeds:
                subs.append(await self.ctx.nc.subscribe(subject, cb=cb))
            timer = asyncio.create_task(self._tick(alerter), name="monitor-tick")
            self.serving.set()
            await wait_for_any(self.ctx.stop, lost)
        finally:
            self.serving.clear()
            await cancel_and_wait([t for t in (timer, keeper) if t is not None])
            await webhooks.close()
            for sub in subs:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            if self.ctx.stop.is_set():
                await lease.release()
            log.info("stopped alerting", lease_lost=lost.is_set())

    async def _ask_restart(self, command: RestartStalledJob) -> StalledJobRestarted:
        """The scheduler requeues the stalled attempt (the only command the monitor may send)."""
        return await call(self.ctx.nc, self.ctx.topology, command, StalledJobRestarted, timeout=10.0)

    def _on(self, cls: type, key_field: str, handle: Callable[[object], Awaitable[None] | None]):
        """A subscription callback: decode, check the subject names the sender, hand over; never raise."""

        async def callback(msg: Msg) -> None:
            try:
                item = decode_message(cls, msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.debug("ignoring malformed sample", subject=msg.subject)
                return
            if msg.subject.rsplit(".", 1)[-1] != getattr(item, key_field):
                return  # a sender speaks only for itself
            try:
                result = handle(item)
                if result is not None:
                    await result
            except Exception:
                log.exception("sample handling failed", subject=msg.subject)

        return callback

    def _on_progress(self, alerter: Alerter):
        """The progress callback: `….progress.<job>.<worker>` names the job and the worker that sent it."""
        topology = self.ctx.topology

        async def callback(msg: Msg) -> None:
            parsed = topology.parse_job_telemetry(msg.subject)
            try:
                sample = decode_message(JobProgress, msg.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                log.debug("ignoring malformed sample", subject=msg.subject)
                return
            if parsed is None or parsed[2] is None or parsed[1] != sample.job_id:
                return  # the subject names the job and its sender
            try:
                alerter.job_progress(sample, parsed[2])
            except Exception:
                log.exception("sample handling failed", subject=msg.subject)

        return callback

    async def _tick(self, alerter: Alerter) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                await alerter.tick()
            except Exception:
                log.exception("tick failed")
