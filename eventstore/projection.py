"""Projections: read models folded from the log, rows and checkpoint written in one transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from nats.aio.msg import Msg

from eventstore.log import JetStreamLog, StoredEvent
from eventstore.observability import consumer_span, get_logger
from eventstore.stores.base import ReadModelStore, Transaction

log = get_logger(component="projections")
CHECKPOINTS = "stoker_checkpoints"
SHADOW_SUFFIX = "__shadow"


class Projection(Protocol):
    """A read model: a name, its tables' DDL, and how one event changes its rows."""

    name: str
    version: int  # bump to rebuild from the log after a change of schema or meaning
    tables: tuple[str, ...]

    def ddl(self, dialect: str) -> list[str]:
        """CREATE statements using `{table}` placeholders (so a shadow copy can be built)."""

    async def apply(self, stored: StoredEvent, tx: Transaction) -> None:
        """Write the rows one event changes (idempotence is the runner's job, not this method's)."""


class Resync(Exception):
    """The checkpoint in the store is behind what this runner read (a replay swapped tables)."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"resume from checkpoint {seq}")
        self.seq = seq


def shadow_tables(projection: Projection) -> dict[str, str]:
    """`{jobs}` → `jobs__shadow` for every table of a projection."""
    return {t: f"{t}{SHADOW_SUFFIX}" for t in projection.tables}


async def ensure_checkpoint_table(store: ReadModelStore) -> None:
    """The table of projection checkpoints."""
    async with store.transaction() as tx:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (projection TEXT PRIMARY KEY, "
                         "seq BIGINT NOT NULL, version INTEGER NOT NULL, updated_at TEXT)")


async def read_checkpoints(tx: Transaction, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """{projection: (seq, version)} for the names that have a checkpoint."""
    rows = await tx.fetchall(f"SELECT projection, seq, version FROM {CHECKPOINTS}")
    return {r["projection"]: (int(r["seq"]), int(r["version"])) for r in rows if r["projection"] in names}


async def write_checkpoint(tx: Transaction, name: str, seq: int, version: int) -> None:
    """Upsert one projection's checkpoint inside the caller's transaction."""
    await tx.execute(
        f"INSERT INTO {CHECKPOINTS} (projection, seq, version, updated_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (projection) DO UPDATE SET seq = excluded.seq, version = excluded.version, "
        "updated_at = excluded.updated_at", name, seq, version, _now_text())


def _now_text() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


async def create_tables(tx: Transaction, projection: Projection, dialect: str) -> None:
    """Run a projection's DDL inside `tx` (its table mapping decides real or shadow names)."""
    for statement in projection.ddl(dialect):
        await tx.execute(statement)


async def drop_tables(tx: Transaction, projection: Projection, mapping: dict[str, str]) -> None:
    """Drop a projection's tables under the names in `mapping`."""
    for table in projection.tables:
        await tx.execute(f"DROP TABLE IF EXISTS {mapping.get(table, table)}")


class ProjectionRunner:
    """Catches projections up from their checkpoints, then follows the log live, in batches."""

    def __init__(self, event_log: JetStreamLog, store: ReadModelStore, projections: Sequence[Projection], *,
                 batch_size: int = 1000, max_delay: float = 0.05) -> None:
        self.log = event_log
        self.store = store
        self.projections = list(projections)
        self.batch_size = batch_size
        self.max_delay = max_delay
        self.position = 0  # the last sequence applied by this runner
        self.applied = asyncio.Event()

    async def prepare(self) -> None:
        """Create missing tables; a projection whose version changed is dropped and rebuilt from 0."""
        await ensure_checkpoint_table(self.store)
        names = [p.name for p in self.projections]
        async with self.store.transaction() as tx:
            checkpoints = await read_checkpoints(tx, names)
            for projection in self.projections:
                seen = checkpoints.get(projection.name)
                if seen is not None and seen[1] != projection.version:
                    log.info("projection changed, rebuilding", projection=projection.name,
                             old=seen[1], new=projection.version)
                    await drop_tables(tx, projection, {})
                    seen = None
                await create_tables(tx, projection, self.store.dialect)
                if seen is None:
                    await write_checkpoint(tx, projection.name, 0, projection.version)

    async def checkpoints(self) -> dict[str, int]:
        """Each projection's checkpoint as stored."""
        async with self.store.transaction() as tx:
            stored = await read_checkpoints(tx, [p.name for p in self.projections])
        return {name: seq for name, (seq, _v) in stored.items()}

    async def run(self) -> None:
        """Follow the log forever (cancel to stop); resynchronises if a replay moved a checkpoint."""
        await self.prepare()
        while True:
            start = min((await self.checkpoints()).values(), default=0) + 1
            try:
                await self._consume(self.log.follow_raw(start), follow=True)
            except Resync as exc:
                log.info("projection checkpoint moved, resuming", seq=exc.seq)

    async def catch_up(self) -> int:
        """Apply everything in the log now, then return the position reached."""
        await self.prepare()
        start = min((await self.checkpoints()).values(), default=0) + 1
        await self._consume(self.log.read_raw(start), follow=False)
        return self.position

    async def _consume(self, messages, *, follow: bool) -> None:
        batch: list[Msg] = []
        deadline = 0.0
        async for msg in messages:
            if not batch:
                deadline = time.monotonic() + self.max_delay
            batch.append(msg)
            idle = msg.metadata.num_pending == 0
            if len(batch) >= self.batch_size or idle or time.monotonic() >= deadline:
                await self.apply_batch(batch)
                batch = []
        if batch:
            await self.apply_batch(batch)

    async def apply_batch(self, messages: Sequence[Msg]) -> None:
        """Apply raw messages in one transaction; events at or below a checkpoint are not applied again."""
        first, last = messages[0].metadata.sequence.stream, messages[-1].metadata.sequence.stream
        async with self.store.transaction() as tx:
            checkpoints = await read_checkpoints(tx, [p.name for p in self.projections])
            pending = [p for p in self.projections if checkpoints.get(p.name, (0, 0))[0] < last]
            for projection in pending:
                if checkpoints.get(projection.name, (0, 0))[0] < first - 1:
                    raise Resync(checkpoints[projection.name][0])
            for msg in messages:
                await self._apply_one(msg, pending, checkpoints, tx)
            for projection in pending:
                await write_checkpoint(tx, projection.name, last, projection.version)
        self.position = last
        self.applied.set()
        self.applied.clear()

    async def _apply_one(self, msg: Msg, pending: list[Projection], checkpoints: dict[str, tuple[int, int]],
                         tx: Transaction) -> None:
        stored = self.log.decode(msg)
        if stored is None:
            return
        with consumer_span(f"stoker.project {stored.type}", stored.headers, **{"stoker.seq": stored.seq}):
            for projection in pending:
                if stored.seq > checkpoints.get(projection.name, (0, 0))[0]:
                    await projection.apply(stored, tx)

    async def wait_for(self, seq: int, timeout: float = 5.0) -> bool:
        """Wait until this runner has applied `seq` (read-your-writes for tests and the gateway)."""
        deadline = time.monotonic() + timeout
        while self.position < seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self.applied.wait(), remaining)
            except TimeoutError:
                return False
        return True
