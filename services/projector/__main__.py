"""Run the projection runner as a service: `python -m services.projector` or `stoker run projector`."""

from __future__ import annotations

import asyncio

from eventstore.micro import start_service
from eventstore.projection import ProjectionRunner
from eventstore.readmodels import all_projections
from eventstore.service import ServiceContext, run_service
from eventstore.stores import open_store

VERSION = "0.1.0"


async def main(ctx: ServiceContext) -> None:
    """Catch every projection up, follow the log, stop on SIGTERM; answer `$SRV.PING` while it runs."""
    store = await open_store(ctx.settings.database_url, ctx.settings.sqlite_path)
    runner = ProjectionRunner(ctx.log, store, all_projections())
    # No endpoints: the micro service is how health sees the projector alive (its lag says how well).
    service = await start_service(ctx.nc, ctx.topology, "projector", VERSION, {},
                                  description="stoker projector: read models folded from the event log")
    task = asyncio.create_task(runner.run())
    stopper = asyncio.create_task(ctx.stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await service.stop()
        task.cancel()
        stopper.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await store.close()
    if task.done() and not task.cancelled() and task.exception():
        raise task.exception()


def cli_main() -> None:
    """Run the projector until SIGTERM."""
    run_service("projector", main)


if __name__ == "__main__":
    cli_main()
