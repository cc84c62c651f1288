"""Run discovery: `python -m services.discovery` or `stoker run discovery`."""

from __future__ import annotations

from eventstore.config import load_settings
from eventstore.service import ServiceContext, run_service
from services.discovery.adapter import DiscoveryService
from services.discovery.settings import DiscoverySettings


async def main(ctx: ServiceContext, settings: DiscoverySettings | None = None) -> None:
    """Stand by until the lease is ours, then keep the worker registry; stop on SIGTERM."""
    await DiscoveryService(ctx, settings or load_settings(DiscoverySettings, "discovery")).run()


def cli_main() -> None:
    """Run discovery until SIGTERM."""
    run_service("discovery", main)


if __name__ == "__main__":
    cli_main()
