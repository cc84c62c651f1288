"""A projection that counts how often each event was applied: any double application shows."""

from __future__ import annotations

import asyncio
import sys

from eventstore.log import StoredEvent
from eventstore.stores.base import Transaction


class CountingProjection:
    """applied(seq, times): `times` must end up 1 for every event."""

    name = "counting"
    version = 1
    tables = ("applied",)

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def ddl(self, dialect: str) -> list[str]:
        """One row per applied event."""
        return ["CREATE TABLE IF NOT EXISTS {applied} (seq BIGINT PRIMARY KEY, times INTEGER NOT NULL)"]

    async def apply(self, stored: StoredEvent, tx: Transaction) -> None:
        """Count one application of this event (deliberately not idempotent)."""
        await tx.execute("INSERT INTO {applied} (seq, times) VALUES (?, 1) ON CONFLICT (seq) DO UPDATE SET"
                         " times = {applied}.times + 1", stored.seq)
        if self.delay:
            await tx.fetchone("SELECT 1 AS ok")  # push the write into the open transaction
            await asyncio.sleep(self.delay)


async def _main(url: str, prefix: str, db: str) -> None:
    from contracts.subjects import Topology
    from eventstore.connect import connect
    from eventstore.log import JetStreamLog
    from eventstore.projection import ProjectionRunner
    from eventstore.stores.sqlite import SqliteStore

    nc = await connect(url, "counting-runner")
    store = await SqliteStore.open(db)
    runner = ProjectionRunner(JetStreamLog(nc, Topology(prefix)), store, [CountingProjection(delay=0.01)],
                              batch_size=50)
    print("ready", flush=True)
    await runner.catch_up()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(_main(*sys.argv[1:4]))
