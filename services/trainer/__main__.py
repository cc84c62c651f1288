"""Run a worker agent: `python -m services.trainer`, `stoker run trainer`, or `stoker worker`."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import structlog

from contracts.subjects import Topology
from eventstore.config import CommonSettings, load_settings
from eventstore.service import ServiceContext, serve
from services.trainer.agent import Agent
from services.trainer.capabilities import detect, worker_id
from services.trainer.settings import TrainerSettings


async def main(ctx: ServiceContext, overrides: dict[str, Any] | None = None) -> None:
    """Join the platform as a worker and run jobs until SIGTERM."""
    settings = load_settings(TrainerSettings, "trainer", overrides)
    data = ctx.settings.data_path
    wid = worker_id(settings, data)
    structlog.contextvars.bind_contextvars(worker_id=wid)
    capabilities = await asyncio.to_thread(detect, settings)
    agent = Agent(ctx.nc, ctx.topology, settings, wid, capabilities, data / "trainer" / wid,
                  replicas=ctx.settings.replicas)
    await agent.run(ctx.stop)


def cli_main(overrides: dict[str, Any] | None = None, common: CommonSettings | None = None) -> None:
    """Run the agent until SIGTERM; the service runtime waits out the job stop grace period."""
    settings = load_settings(TrainerSettings, "trainer", overrides)
    asyncio.run(serve("trainer", functools.partial(main, overrides=overrides), common,
                      grace=settings.stop_grace_s + 30, requires=worker_streams))


def worker_streams(topology: Topology) -> list[str]:
    """What a worker needs before it starts: its dispatch queue and the telemetry stream."""
    return [topology.dispatch_stream, topology.telemetry_stream]


if __name__ == "__main__":
    cli_main()
