"""Projections: read models folded from the log, rows and checkpoint written in one transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Protocol

from nats.aio.msg import Msg

from contracts.codec import MalformedEvent
from eventstore.follow import cancel_and_wait
from eventstore.log import TYPE, JetStreamLog, StoredEvent
from eventstore.observability import consumer_span, get_logger, tracing_on
from eventstore.stores.base import ReadModelStore, Transaction

log = get_logger(component="projections")
CHECKPOINTS = "stoker_checkpoints"
DEAD_LETTERS = "stoker_dead_letters"  # events a projection passed over: malformed, or its apply failed
SHADOW_SUFFIX = "__shadow"
MAX_ERROR_TEXT = 2000


class Projection(Protocol):
    """A read model: a name, its tables' DDL, and how one event changes its rows."""

    name: str
    version: int  # bump to rebuild from the log after a change of schema or meaning
    tables: tuple[str, ...]

    def ddl(self, dialect: str) -> list[str]:
        """CREATE statements using `{table}` placeholders (so a shadow copy can be built)."""

    async def apply(self, stored: StoredEvent, tx: Transaction) -> None:
        """Write the rows one event changes (idempotence is the runner's job, not this method's).

        A projection may also have `apply_batch(events, tx)`: the same as `apply` on each event in order,
        done at once (a row read and written once for all the batch's events of it); `apply_events` uses it.
        """


async def apply_events(projection: Projection, events: Sequence[StoredEvent], tx: Transaction) -> None:
    """Apply events in order: in one call where the projection folds a batch at once, else one by one."""
    batch = getattr(projection, "apply_batch", None)
    if batch is not None:
        await batch(events, tx)
        return
    for stored in events:
        await projection.apply(stored, tx)


class Resync(Exception):
    """The checkpoint in the store is behind what this runner read (a replay swapped tables)."""

    def __init__(self, seq: int) -> None:
        super().__init__(f"resume from checkpoint {seq}")
        self.seq = seq


def shadow_tables(projection: Projection) -> dict[str, str]:
    """`{jobs}` → `jobs__shadow` for every table of a projection."""
    return {t: f"{t}{SHADOW_SUFFIX}" for t in projection.tables}


async def ensure_checkpoint_table(store: ReadModelStore) -> None:
    """The tables of projection checkpoints and of dead letters (events a projection passed over)."""
    async with store.transaction() as tx:
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {CHECKPOINTS} (projection TEXT PRIMARY KEY, "
                         "seq BIGINT NOT NULL, version INTEGER NOT NULL, updated_at TEXT)")
        await tx.execute(f"CREATE TABLE IF NOT EXISTS {DEAD_LETTERS} (projection TEXT NOT NULL, seq BIGINT NOT NULL,"
                         " subject TEXT NOT NULL, event_type TEXT, reason TEXT NOT NULL, error TEXT NOT NULL,"
                         " dead_at TEXT NOT NULL, PRIMARY KEY (projection, seq))")


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


async def write_dead_letter(tx: Transaction, name: str, msg: Msg, reason: str, error: str) -> None:
    """Record that projection `name` passed over one message: `reason` malformed (it is no event) or failed."""
    await tx.execute(
        f"INSERT INTO {DEAD_LETTERS} (projection, seq, subject, event_type, reason, error, dead_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (projection, seq) DO NOTHING",
        name, msg.metadata.sequence.stream, msg.subject, (msg.headers or {}).get(TYPE), reason,
        error[:MAX_ERROR_TEXT], _now_text())


async def clear_dead_letters(tx: Transaction, name: str) -> None:
    """Forget a projection's dead letters (it is rebuilt from the log, which finds them again)."""
    await tx.execute(f"DELETE FROM {DEAD_LETTERS} WHERE projection = ?", name)


async def dead_letter_counts(store: ReadModelStore) -> dict[str, dict[str, int]]:
    """{projection: {"malformed": n, "failed": m}} for projections that passed over events."""
    if not await store.table_exists(DEAD_LETTERS):
        return {}
    rows = await store.fetchall(f"SELECT projection, reason, COUNT(*) AS n FROM {DEAD_LETTERS}"
                                " GROUP BY projection, reason")
    counts: dict[str, dict[str, int]] = {}
    for row in rows:
        counts.setdefault(row["projection"], {"malformed": 0, "failed": 0})[row["reason"]] = int(row["n"])
    return counts


async def malformed_total(store: ReadModelStore) -> int:
    """How many distinct messages of the log some projection passed over as malformed."""
    if not await store.table_exists(DEAD_LETTERS):
        return 0
    row = await store.fetchone(f"SELECT COUNT(DISTINCT seq) AS n FROM {DEAD_LETTERS} WHERE reason = 'malformed'")
    return int(row["n"]) if row else 0


async def dead_letters(store: ReadModelStore, limit: int = 100) -> list[dict[str, object]]:
    """The newest dead letters, newest first."""
    if not await store.table_exists(DEAD_LETTERS):
        return []
    return await store.fetchall(f"SELECT projection, seq, subject, event_type, reason, error, dead_at"
                                f" FROM {DEAD_LETTERS} ORDER BY seq DESC, projection LIMIT ?", limit)


def _error_text(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"


async def apply_alone(event_log: JetStreamLog, store: ReadModelStore, projection: Projection, msg: Msg, *,
                      name: str | None = None, tables: dict[str, str] | None = None,
                      checkpoint: bool = True) -> bool:
    """Apply one message to one projection in a transaction of its own; quarantine it if that fails.

    The slow path after a batch failed: the event that breaks the projection gets a dead-letter row,
    written with the checkpoint that passes it, and every other event is applied as usual. An error of
    the store itself (`is_transient`) is raised instead: the event is not to blame. Returns whether the
    event was applied.
    """
    name = name or projection.name
    seq = msg.metadata.sequence.stream
    decoded = event_log.decode_or_reason(msg)
    try:
        async with store.transaction(tables) as tx:
            if isinstance(decoded, MalformedEvent):
                await write_dead_letter(tx, name, msg, "malformed", str(decoded))
            else:
                await apply_events(projection, (decoded,), tx)
            if checkpoint:
                await write_checkpoint(tx, name, seq, projection.version)
        return not isinstance(decoded, MalformedEvent)
    except Exception as exc:
        if store.is_transient(exc):
            raise
        error = _error_text(exc)
    async with store.transaction() as tx:
        await write_dead_letter(tx, name, msg, "failed", error)
        if checkpoint:
            await write_checkpoint(tx, name, seq, projection.version)
    log.error("event quarantined: the projection cannot apply it", projection=name, seq=seq, subject=msg.subject,
              type=(msg.headers or {}).get(TYPE), error=error)
    return False


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
        self._moved = asyncio.Event()  # set (then replaced) each time `position` moves on

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
                    await clear_dead_letters(tx, projection.name)
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
        """Read batches and apply them, the next batch read while the one before is being written.

        At most one batch is in flight, and a batch is applied only after the one before it is: order and
        checkpoints are as if applied one after another. Following live, a batch waits at most `max_delay`
        for more messages (the read models' lag); catching up, batches fill to `batch_size` or the end.
        """
        batch: list[Msg] = []
        deadline = 0.0
        writing: asyncio.Task | None = None
        try:
            async for msg in messages:
                if not batch:
                    deadline = time.monotonic() + self.max_delay
                batch.append(msg)
                idle = msg.metadata.num_pending == 0
                if len(batch) >= self.batch_size or idle or (follow and time.monotonic() >= deadline):
                    if writing is not None:
                        await writing
                    writing = asyncio.create_task(self.apply_batch(batch))
                    batch = []
                    if idle:  # nothing more to read now: let the write land before waiting for news
                        await writing
                        writing = None
                elif writing is not None and writing.done():
                    await writing  # raises what the write raised (a Resync, a store error) without delay
                    writing = None
            if writing is not None:
                await writing
                writing = None
            if batch:
                await self.apply_batch(batch)
        finally:
            if writing is not None and not writing.done():
                await cancel_and_wait([writing])

    async def apply_batch(self, messages: Sequence[Msg]) -> None:
        """Apply raw messages in one transaction; events at or below a checkpoint are not applied again.

        When the batch cannot be applied, its events are applied one at a time, each on its own, and an
        event a projection cannot apply is quarantined (`apply_alone`): one event never stops a projection.
        """
        last = messages[-1].metadata.sequence.stream
        try:
            await self._apply_together(messages)
        except Resync:
            raise
        except Exception as exc:
            if self.store.is_transient(exc):
                raise
            log.warning("a batch could not be applied; applying its events one by one",
                        first=messages[0].metadata.sequence.stream, last=last, error=_error_text(exc))
            await self._apply_singly(messages)
        self.advanced(last)

    def advanced(self, seq: int) -> None:
        """`seq` is applied: wake every `wait_for`.

        Each wait holds the event that was current when it looked at `position`, and that event stays set:
        a wait that began just before (its waiting task not started yet) still wakes. An event set and at
        once cleared wakes only the waits already parked on it, and lost such a wait until its timeout.
        """
        self.position = seq
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def _apply_together(self, messages: Sequence[Msg]) -> None:
        first, last = messages[0].metadata.sequence.stream, messages[-1].metadata.sequence.stream
        async with self.store.transaction() as tx:
            checkpoints = await read_checkpoints(tx, [p.name for p in self.projections])
            pending = [p for p in self.projections if checkpoints.get(p.name, (0, 0))[0] < last]
            for projection in pending:
                if checkpoints.get(projection.name, (0, 0))[0] < first - 1:
                    raise Resync(checkpoints[projection.name][0])
            await self._apply_decoded(messages, pending, checkpoints, tx)
            for projection in pending:
                await write_checkpoint(tx, projection.name, last, projection.version)

    async def _apply_singly(self, messages: Sequence[Msg]) -> None:
        async with self.store.transaction() as tx:
            checkpoints = await read_checkpoints(tx, [p.name for p in self.projections])
        for msg in messages:
            seq = msg.metadata.sequence.stream
            for projection in self.projections:
                if checkpoints.get(projection.name, (0, 0))[0] < seq:
                    await apply_alone(self.log, self.store, projection, msg)

    async def _apply_decoded(self, messages: Sequence[Msg], pending: list[Projection],
                             checkpoints: dict[str, tuple[int, int]], tx: Transaction) -> None:
        """Decode the batch once; give each projection the events past its checkpoint in one call, or with
        tracing on, apply event after event inside that event's consumer span."""
        behind: dict[str, list[StoredEvent]] = {p.name: [] for p in pending}
        traced = tracing_on()  # projections send nothing on, so without spans there is no context to carry
        first = messages[0].metadata.sequence.stream
        # As a rule every pending projection is behind the whole batch: then no message needs the comparison.
        all_late = all(checkpoints.get(p.name, (0, 0))[0] < first for p in pending)
        for msg in messages:
            seq = msg.metadata.sequence.stream
            late = pending if all_late else [p for p in pending if seq > checkpoints.get(p.name, (0, 0))[0]]
            decoded = self.log.decode_or_reason(msg)
            if isinstance(decoded, MalformedEvent):
                for projection in late:  # counted where the projection's checkpoint passes it
                    await write_dead_letter(tx, projection.name, msg, "malformed", str(decoded))
            elif traced:
                with consumer_span(f"stoker.project {decoded.type}", decoded.headers, **{"stoker.seq": decoded.seq}):
                    for projection in late:
                        await apply_events(projection, (decoded,), tx)
            else:
                for projection in late:
                    behind[projection.name].append(decoded)
        for projection in pending:
            if behind[projection.name]:
                await apply_events(projection, behind[projection.name], tx)

    async def wait_for(self, seq: int, timeout: float = 5.0) -> bool:
        """Wait until this runner has applied `seq` (read-your-writes for tests and the gateway)."""
        deadline = time.monotonic() + timeout
        while self.position < seq:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            moved = self._moved  # taken with `position` read above, before anything else may run
            try:
                await asyncio.wait_for(moved.wait(), remaining)
            except TimeoutError:
                return False
        return True
