"""The worker's durable pull consumer on its dispatch subject, kept primed so assignments arrive at once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError

from contracts.subjects import Topology
from eventstore.observability import get_logger

log = get_logger(component="dispatch")
EXPIRES_S = 30.0
HEARTBEAT_S = 2.0


class DispatchConsumer:
    """Keeps pull requests outstanding (credit ≥ half a batch) and hands each message to `handle`."""

    def __init__(self, nc: Client, topology: Topology, worker_id: str, handle: Callable[[Msg], Awaitable[None]],
                 batch: int = 64) -> None:
        self.nc, self.topology, self.worker_id, self.handle = nc, topology, worker_id, handle
        self.batch = batch
        self.name = topology.dispatch_consumer(worker_id)
        self.credit = 0
        self.last_heard = time.monotonic()
        self.lost = False
        self._wake = asyncio.Event()

    async def ensure(self) -> None:
        """Create the durable consumer if it does not exist (existing ones keep their undelivered work).

        Named as well as durable, so that the create request's subject carries the filter
        (`$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>`): a worker's NATS user may create only its own.
        """
        js = self.nc.jetstream()
        config = ConsumerConfig(name=self.name, durable_name=self.name,
                                filter_subject=self.topology.dispatch(self.worker_id), ack_policy=AckPolicy.EXPLICIT,
                                deliver_policy=DeliverPolicy.ALL, ack_wait=60, max_deliver=-1, max_ack_pending=20_000,
                                max_waiting=64)
        try:
            await js.add_consumer(self.topology.dispatch_stream, config)
        except BadRequestError as exc:
            # Same name, other settings (an older version made it): keep it, its queue matters more.
            log.warning("dispatch consumer exists with other settings", error=str(exc))

    @property
    def _next_subject(self) -> str:
        return f"$JS.API.CONSUMER.MSG.NEXT.{self.topology.dispatch_stream}.{self.name}"

    async def run(self, stop: asyncio.Event) -> None:
        """Pull until `stop` is set."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=self._on_msg)
        try:
            while not stop.is_set():
                if self.lost:
                    await self._recreate()
                if time.monotonic() - self.last_heard > 3 * HEARTBEAT_S:
                    self.credit = 0  # no heartbeat: the server forgot our requests (reconnect, restart)
                if self.credit <= self.batch // 2:
                    await self._pull(inbox)
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), HEARTBEAT_S)
                except TimeoutError:
                    pass
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    async def _recreate(self) -> None:
        try:
            await self.ensure()
            self.lost = False
        except nats.errors.Error as exc:
            log.warning("dispatch consumer not recreated yet", error=repr(exc))

    async def _pull(self, inbox: str) -> None:
        request = {"batch": self.batch, "expires": int(EXPIRES_S * 1e9), "idle_heartbeat": int(HEARTBEAT_S * 1e9)}
        try:
            await self.nc.publish(self._next_subject, json.dumps(request).encode(), reply=inbox)
        except nats.errors.Error as exc:
            log.warning("pull request not sent", error=repr(exc))
            return
        self.credit += self.batch
        self.last_heard = time.monotonic()

    async def _on_msg(self, msg: Msg) -> None:
        self.last_heard = time.monotonic()
        if not (msg.reply or "").startswith("$JS.ACK"):
            self._on_status((msg.headers or {}).get("Status", ""), msg.headers or {})
            return
        self.credit -= 1
        if self.credit <= self.batch // 2:
            self._wake.set()
        try:
            await self.handle(msg)
        except Exception:
            log.exception("dispatch message not handled", subject=msg.subject)

    def _on_status(self, status: str, headers: dict[str, str]) -> None:
        if status == "100":
            return  # idle heartbeat
        pending = headers.get("Nats-Pending-Messages")
        # 408: a request expired; 409: the server dropped it. Either way its remaining credit is gone.
        self.credit = max(0, self.credit - int(pending)) if pending and pending.isdigit() else 0
        description = headers.get("Description", "")
        if status == "503" or (status == "409" and "deleted" in description.lower()):
            self.lost = True  # someone deleted our durable consumer: make it again (its queue is gone)
        if status not in ("404", "408"):
            log.debug("pull request ended", status=status, description=description)
        self._wake.set()
