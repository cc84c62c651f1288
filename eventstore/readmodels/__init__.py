"""The read models every stoker installation keeps: jobs (with checkpoints), workers and alerts.

One module per read model holds its tables, its projection and its queries; the gateway and the CLI
both read through them. Tokens have no read model: `gateway/tokens.py` folds them from the log into memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from eventstore.projection import CHECKPOINTS, Projection, create_tables, ensure_checkpoint_table
from eventstore.records import StoredEvent
from eventstore.stores.base import ReadModelStore, Transaction

Handlers = Mapping[type, Callable[[Any, int, Transaction], Awaitable[None]]]  # event type -> (event, seq, tx)


def all_projections() -> list[Projection]:
    """Every built-in projection, in the order they are applied."""
    from eventstore.readmodels.alerts import AlertsProjection
    from eventstore.readmodels.jobs import JobsProjection
    from eventstore.readmodels.maps import MapsProjection
    from eventstore.readmodels.workers import WorkersProjection

    return [JobsProjection(), WorkersProjection(), MapsProjection(), AlertsProjection()]


def projection_named(name: str) -> Projection:
    """One built-in projection by name; ValueError lists the known names."""
    known = {p.name: p for p in all_projections()}
    if name not in known:
        raise ValueError(f"unknown projection {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


async def apply_handler(handlers: Handlers, stored: StoredEvent, tx: Transaction) -> None:
    """Apply one event with the read model's handler for its type (an event it does not show: nothing)."""
    await apply_handlers(handlers, (stored,), tx)


async def apply_handlers(handlers: Handlers, events: Sequence[StoredEvent], tx: Transaction) -> None:
    """`apply_handler` on each event in order (a projection's `apply_batch`: the events it does not show cost
    a lookup each, not a call)."""
    for stored in events:
        handler = handlers.get(type(stored.event))
        if handler is not None:
            await handler(stored.event, stored.seq, tx)


async def ensure_tables(store: ReadModelStore) -> None:
    """Create the read models' tables if the projector has not yet (reads then see empty tables)."""
    await ensure_checkpoint_table(store)
    async with store.transaction() as tx:
        for projection in all_projections():
            await create_tables(tx, projection, store.dialect)


async def is_built(store: ReadModelStore, name: str) -> bool:
    """Whether a read model's tables exist (a read-only reader cannot create them)."""
    for table in projection_named(name).tables:
        if not await store.table_exists(table):
            return False
    return True


async def projection_seq(store: ReadModelStore, name: str) -> int:
    """One projection's checkpoint (0 when it has none yet)."""
    row = await store.fetchone(f"SELECT seq FROM {CHECKPOINTS} WHERE projection = ?", name)
    return int(row["seq"]) if row else 0


async def projection_checkpoints(store: ReadModelStore) -> dict[str, tuple[int, str | None]]:
    """{projection: (checkpoint seq, updated_at)} as the projector last wrote them."""
    rows = await store.fetchall(f"SELECT projection, seq, updated_at FROM {CHECKPOINTS}")
    return {r["projection"]: (int(r["seq"]), r["updated_at"]) for r in rows}
