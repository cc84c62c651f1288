"""The runtime every stoker service shares: settings, logs, traces, NATS, streams, signals, drain."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client

from contracts.subjects import Topology
from eventstore.config import CommonSettings, load_settings
from eventstore.connect import NatsUnavailable, connect
from eventstore.log import JetStreamLog
from eventstore.observability import configure_logging, configure_tracing, get_logger
from eventstore.server import resolve_nats_url


@dataclass
class ServiceContext:
    """What a service's main coroutine gets: settings, a connection, the log, and a stop signal."""

    name: str
    settings: CommonSettings
    nc: Client
    log: JetStreamLog
    stop: asyncio.Event

    @property
    def topology(self) -> Topology:
        """Stream and subject names in use."""
        return self.log.topology


ServiceMain = Callable[[ServiceContext], Awaitable[None]]


async def connect_with_retry(url: str, name: str, attempts: int = 60) -> Client:
    """Connect, retrying for a while (a service may start before its NATS server is up)."""
    for attempt in range(attempts):
        try:
            return await connect(url, name)
        except NatsUnavailable:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(min(0.25 * (attempt + 1), 2.0))
    raise AssertionError("unreachable")


async def serve(name: str, main: ServiceMain, settings: CommonSettings | None = None,
                grace: float = 30.0) -> None:
    """Run `main` until it returns or SIGTERM/SIGINT; then give it `grace` seconds and drain NATS."""
    settings = settings or load_settings(CommonSettings)
    configure_logging(name, settings.log_format, settings.log_level)
    configure_tracing(name, settings.tracing, settings.otlp_endpoint, path=settings.trace_path)
    log = get_logger()
    url = resolve_nats_url(settings.nats_url, settings.data_path)
    nc = await connect_with_retry(url, f"stoker-{name}")
    event_log = JetStreamLog(nc, Topology(settings.prefix))
    await event_log.ensure_streams(settings.replicas)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("service starting", nats=url)
    task = asyncio.create_task(main(ServiceContext(name, settings, nc, event_log, stop)))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        try:
            await asyncio.wait_for(task, grace)
        except TimeoutError:
            log.warning("service did not stop in time, cancelling", grace_s=grace)
    stopper.cancel()
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.error("service failed", error=repr(task.exception()))
        await nc.close()
        raise task.exception()
    try:
        await nc.drain()
    except (nats.errors.ConnectionReconnectingError, nats.errors.ConnectionClosedError, TimeoutError):
        await nc.close()  # NATS is already gone (stopped before us): nothing left to flush
    log.info("service stopped")


def run_service(name: str, main: ServiceMain, settings: CommonSettings | None = None) -> None:
    """Entry point of `python -m services.<name>` and `stoker run <name>`."""
    asyncio.run(serve(name, main, settings))
