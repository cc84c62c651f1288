"""Rebuilding a projection from sequence 1 into shadow tables, then swapping them in at once."""

from __future__ import annotations

from contracts.codec import MalformedEvent
from eventstore.log import JetStreamLog
from eventstore.observability import get_logger
from eventstore.projection import (
    DEAD_LETTERS,
    SHADOW_SUFFIX,
    Projection,
    apply_alone,
    apply_events,
    clear_dead_letters,
    create_tables,
    drop_tables,
    ensure_checkpoint_table,
    shadow_tables,
    write_checkpoint,
    write_dead_letter,
)
from eventstore.stores.base import ReadModelStore

log = get_logger(component="replay")


async def replay(event_log: JetStreamLog, store: ReadModelStore, projection: Projection,
                 batch_size: int = 2000) -> int:
    """Rebuild `projection` into shadow tables from the whole log and swap; returns the sequence reached."""
    await ensure_checkpoint_table(store)
    shadow = shadow_tables(projection)
    async with store.transaction(shadow) as tx:
        await drop_tables(tx, projection, shadow)
        await clear_dead_letters(tx, projection.name + SHADOW_SUFFIX)
        await create_tables(tx, projection, store.dialect)
    position = 0
    while True:
        end = await event_log.last_seq()
        if position >= end:
            break
        position = await _fill(event_log, store, projection, shadow, position, end, batch_size)
    await _swap(store, projection, shadow, position)
    log.info("projection rebuilt", projection=projection.name, seq=position)
    return position


async def _fill(event_log: JetStreamLog, store: ReadModelStore, projection: Projection,
                shadow: dict[str, str], position: int, end: int, batch_size: int) -> int:
    batch = []
    async for msg in event_log.read_raw(position + 1, until_seq=end):
        batch.append(msg)
        if len(batch) >= batch_size:
            position = await _apply(event_log, store, projection, shadow, batch)
            batch = []
    if batch:
        position = await _apply(event_log, store, projection, shadow, batch)
    return max(position, end)


async def _apply(event_log: JetStreamLog, store: ReadModelStore, projection: Projection,
                 shadow: dict[str, str], batch: list) -> int:
    try:
        async with store.transaction(shadow) as tx:
            events = []
            for msg in batch:
                decoded = event_log.decode_or_reason(msg)
                if isinstance(decoded, MalformedEvent):
                    await write_dead_letter(tx, projection.name + SHADOW_SUFFIX, msg, "malformed", str(decoded))
                else:
                    events.append(decoded)
            await apply_events(projection, events, tx)
    except Exception as exc:
        if store.is_transient(exc):
            raise
        # As the live runner does: one event at a time, and the one that cannot be applied is quarantined.
        for msg in batch:
            await apply_alone(event_log, store, projection, msg, name=projection.name + SHADOW_SUFFIX,
                              tables=shadow, checkpoint=False)
    return batch[-1].metadata.sequence.stream


async def _swap(store: ReadModelStore, projection: Projection, shadow: dict[str, str], position: int) -> None:
    # One transaction: readers see the old rows or the new ones, never a mix.
    async with store.transaction() as tx:
        await drop_tables(tx, projection, {})
        await create_tables(tx, projection, store.dialect)
        for table in projection.tables:
            await tx.execute(f"INSERT INTO {table} SELECT * FROM {shadow[table]}")
        await drop_tables(tx, projection, shadow)
        await write_checkpoint(tx, projection.name, position, projection.version)
        await tx.execute("DELETE FROM stoker_checkpoints WHERE projection = ?", projection.name + SHADOW_SUFFIX)
        await clear_dead_letters(tx, projection.name)
        await tx.execute(f"UPDATE {DEAD_LETTERS} SET projection = ? WHERE projection = ?", projection.name,
                         projection.name + SHADOW_SUFFIX)
