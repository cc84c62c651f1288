"""Run the monitor: `python -m services.monitor` or `stoker run monitor`."""

from __future__ import annotations

import asyncio

from contracts.subjects import Topology
from eventstore.config import load_settings
from eventstore.service import ServiceContext, serve
from services.monitor.adapter import MonitorService
from services.monitor.settings import MonitorSettings


async def main(ctx: ServiceContext, settings: MonitorSettings | None = None) -> None:
    """Sample this machine (and, role `alert`, decide alerts while holding the lease); stop on SIGTERM."""
    await MonitorService(ctx, settings or load_settings(MonitorSettings, "monitor")).run()


def cli_main() -> None:
    """Run the monitor until SIGTERM."""
    # Beside a worker it runs with the worker's credential, which may see only the telemetry stream.
    asyncio.run(serve("monitor", main, requires=monitor_streams))


def monitor_streams(topology: Topology) -> list[str]:
    """What a monitor needs before it starts: the telemetry stream its samples go to."""
    return [topology.telemetry_stream]


if __name__ == "__main__":
    cli_main()
