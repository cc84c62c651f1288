"""Run the monitor: `python -m services.monitor` or `stoker run monitor`."""

from __future__ import annotations

from eventstore.config import load_settings
from eventstore.service import ServiceContext, run_service
from services.monitor.adapter import MonitorService
from services.monitor.settings import MonitorSettings


async def main(ctx: ServiceContext, settings: MonitorSettings | None = None) -> None:
    """Sample this machine (and, role `alert`, decide alerts while holding the lease); stop on SIGTERM."""
    await MonitorService(ctx, settings or load_settings(MonitorSettings, "monitor")).run()


def cli_main() -> None:
    """Run the monitor until SIGTERM."""
    run_service("monitor", main)


if __name__ == "__main__":
    cli_main()
