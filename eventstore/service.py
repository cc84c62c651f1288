"""The runtime every stoker service shares: settings, logs, traces, NATS, streams, signals, drain."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client

from contracts.subjects import Topology
from eventstore import lifeline
from eventstore.config import CommonSettings, load_settings
from eventstore.connect import NatsRefused, NatsUnavailable, connect
from eventstore.log import JetStreamLog
from eventstore.observability import configure_logging, configure_tracing, get_logger
from eventstore.ports import StreamMissing
from eventstore.server import NoPlatform, resolve_nats_ca, resolve_nats_url
from eventstore.stores import StoreUnavailable

EXIT_NATS_UNREACHABLE = 3  # stopped, but NATS was gone at the end: its last messages may not have arrived
EXIT_NATS_REFUSED = 4  # NATS closed the connection for good: the credential was refused (revoked)
DRAIN_TIMEOUT_S = 10.0


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


async def connect_with_retry(url: str, name: str, attempts: int = 60, credentials: Path | None = None,
                             on_closed: Callable[[], None] | None = None, ca_file: str | None = None) -> Client:
    """Connect, retrying for a while (a service may start before its NATS server is up); a refused credential
    is not retried."""
    for attempt in range(attempts):
        try:
            return await connect(url, name, credentials=credentials, on_closed=on_closed, ca_file=ca_file)
        except NatsRefused:
            raise
        except NatsUnavailable:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(min(0.25 * (attempt + 1), 2.0))
    raise AssertionError("unreachable")


def control_plane_streams(topology: Topology) -> list[str]:
    """What a control-plane service needs before it starts: the event log."""
    return [topology.events_stream]


async def serve(name: str, main: ServiceMain, settings: CommonSettings | None = None,
                grace: float = 30.0, requires: Callable[[Topology], list[str]] = control_plane_streams) -> None:
    """Run `main` until it returns or SIGTERM/SIGINT/SIGHUP; then give it `grace` seconds and drain NATS.

    The streams `requires` names must exist (the admin makes them: `stoker up`); the service only checks.

    Under `stoker up` the service also stops on its own when the supervisor dies (see eventstore.lifeline).
    When NATS is unreachable at the end, so that what the service still had to send may not have arrived,
    the process exits with EXIT_NATS_UNREACHABLE instead of 0; when NATS closed the connection for good
    (a revoked credential), with EXIT_NATS_REFUSED.
    """
    settings = settings or load_settings(CommonSettings)
    configure_logging(name, settings.log_format, settings.log_level)
    configure_tracing(name, settings.tracing, settings.otlp_endpoint, path=settings.trace_path)
    log = get_logger()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    lifeline.watch()
    url = resolve_nats_url(settings.nats_url, settings.data_path)
    cut_off = asyncio.Event()

    def closed() -> None:
        # Closed for good before we asked (its credential refused: revoked): the service cannot do its job.
        if not stop.is_set():
            cut_off.set()
        stop.set()

    nc = await _unless_stopped(connect_with_retry(url, f"stoker-{name}", **nats_security(settings),
                                                  on_closed=closed), stop)
    if nc is None:
        log.info("service stopped before it reached NATS", nats=url)
        return
    event_log = JetStreamLog(nc, Topology(settings.prefix))
    try:
        await event_log.require_streams(requires(event_log.topology))
    except StreamMissing:
        await nc.close()
        raise
    log.info("service starting", nats=url)
    task = asyncio.create_task(main(ServiceContext(name, settings, nc, event_log, stop)))
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        await asyncio.wait({task}, timeout=grace)  # how it ended is looked at below
        if not task.done():
            log.warning("service did not stop in time, cancelling", grace_s=grace)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    stopper.cancel()
    if cut_off.is_set():
        if task.done() and not task.cancelled():
            task.exception()  # what failed after the cut is its consequence, not news
        log.error("service stopped: NATS closed its connection for good (its credential was refused: revoked?)")
        raise SystemExit(EXIT_NATS_REFUSED)
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.error("service failed", error=repr(task.exception()))
        await nc.close()
        raise task.exception()
    reached = nc.is_connected
    try:
        await asyncio.wait_for(nc.drain(), DRAIN_TIMEOUT_S)
    except (nats.errors.ConnectionReconnectingError, nats.errors.ConnectionClosedError, nats.errors.Error,
            TimeoutError):
        reached = False
        await nc.close()  # NATS is gone (stopped before us, or down): nothing more can be flushed
    if not reached:
        log.warning("service stopped without NATS: what it still had to send may not have arrived")
        raise SystemExit(EXIT_NATS_UNREACHABLE)
    log.info("service stopped")


async def _unless_stopped(connecting: Awaitable[Client], stop: asyncio.Event) -> Client | None:
    """The connection, or None when `stop` is set first (a service asked to stop while NATS is away)."""
    task = asyncio.ensure_future(connecting)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return None


def nats_security(settings: CommonSettings) -> dict[str, Any]:
    """How this process proves who it talks to and who it is: the CA to pin, the nkey seed file to sign in with."""
    return {"ca_file": resolve_nats_ca(settings.nats_ca, settings.nats_url, settings.data_path),
            "credentials": settings.credentials_path}


def run_service(name: str, main: ServiceMain, settings: CommonSettings | None = None, **options: Any) -> None:
    """Entry point of `python -m services.<name>` and `stoker run <name>` (`options`: those of `serve`)."""
    try:
        asyncio.run(serve(name, main, settings, **options))
    except (NoPlatform, StoreUnavailable) as exc:  # nowhere to connect: one line, not a traceback
        sys.exit(f"stoker-{name}: {exc}")
