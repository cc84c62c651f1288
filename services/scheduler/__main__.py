"""Run the scheduler: `python -m services.scheduler` or `stoker run scheduler`."""

from __future__ import annotations

from eventstore.config import load_settings
from eventstore.service import ServiceContext, run_service
from services.scheduler.adapter import SchedulerService
from services.scheduler.settings import SchedulerSettings


async def main(ctx: ServiceContext, settings: SchedulerSettings | None = None) -> None:
    """Follow the log as a standby, lead while holding the lease, stop on SIGTERM."""
    await SchedulerService(ctx, settings or load_settings(SchedulerSettings, "scheduler")).run()


def cli_main() -> None:
    """Run the scheduler until SIGTERM."""
    run_service("scheduler", main)


if __name__ == "__main__":
    cli_main()
