"""Run a worker agent: `python -m services.trainer`, `stoker run trainer`, or `stoker worker`."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import structlog

from contracts.subjects import Topology
from eventstore.config import CommonSettings, load_settings
from eventstore.follow import cancel_and_wait
from eventstore.sdnotify import Notifier
from eventstore.service import ServiceContext, run_service
from services.trainer.agent import Agent
from services.trainer.capabilities import detect, worker_id
from services.trainer.gpus import wait_for_expected_gpus
from services.trainer.settings import TrainerSettings


async def main(ctx: ServiceContext, overrides: dict[str, Any] | None = None) -> None:
    """Join the platform as a worker and run jobs until SIGTERM."""
    settings = load_settings(TrainerSettings, "trainer", overrides)
    data = ctx.settings.data_path
    wid = worker_id(settings, data)
    structlog.contextvars.bind_contextvars(worker_id=wid)
    notifier = Notifier.from_environment()  # under a Type=notify unit (`stoker worker` as the service)
    watchdog = notifier.start_watchdog()
    try:
        gpus = await wait_for_expected_gpus(settings, ctx.stop, notifier)
        if gpus is None:
            return  # stopped while waiting for the GPUs
        capabilities = await asyncio.to_thread(detect, settings, gpus)
        agent = Agent(ctx.nc, ctx.topology, settings, wid, capabilities, data / "trainer" / wid,
                      replicas=ctx.settings.replicas,
                      on_ready=lambda: notifier.ready(f"worker {wid} registered: {capabilities.slots} slot(s)"))
        stopping = asyncio.create_task(_say_stopping(ctx.stop, notifier))
        await agent.run(ctx.stop)
        await cancel_and_wait([stopping])
    finally:
        await cancel_and_wait([watchdog] if watchdog else [])


async def _say_stopping(stop: asyncio.Event, notifier: Notifier) -> None:
    await stop.wait()
    notifier.stopping("stopping: running jobs checkpoint and go back to the queue")


def cli_main(overrides: dict[str, Any] | None = None, common: CommonSettings | None = None) -> None:
    """Run the agent until SIGTERM; the service runtime waits out the job stop grace period."""
    settings = load_settings(TrainerSettings, "trainer", overrides)
    run_service("trainer", functools.partial(main, overrides=overrides), common,
                grace=settings.stop_grace_s + 30, requires=worker_streams)


def worker_streams(topology: Topology) -> list[str]:
    """What a worker needs before it starts: its dispatch queue and the telemetry stream."""
    return [topology.dispatch_stream, topology.telemetry_stream]


if __name__ == "__main__":
    cli_main()
