"""The `maps` read model: one row per map (deleted ones kept, marked), and its queries.

How many runs trained or tested on a map comes from the jobs read model at query time (each job row
carries its `map_id`), so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts import events as ev
from contracts.status import UNFINISHED_STATUSES
from eventstore.log import StoredEvent
from eventstore.readmodels import Handlers, apply_handler, apply_handlers
from eventstore.readmodels.jobs import iso
from eventstore.stores.base import ReadModelStore, Transaction


class MapsProjection:
    """maps(id, name, filename, sha256, size_bytes, uploaded_at, deleted_at, updated_seq)."""

    name = "maps"
    version = 1
    tables = ("maps",)

    def ddl(self, dialect: str) -> list[str]:
        """The maps table."""
        return [
            "CREATE TABLE IF NOT EXISTS {maps} (id BIGINT PRIMARY KEY, name TEXT NOT NULL, filename TEXT NOT NULL,"
            " sha256 TEXT NOT NULL, size_bytes BIGINT NOT NULL, uploaded_at TEXT NOT NULL, deleted_at TEXT,"
            " updated_seq BIGINT NOT NULL)",
        ]

    async def apply(self, stored: StoredEvent, tx: Transaction) -> None:
        """Update the map's row for one event."""
        await apply_handler(_HANDLERS, stored, tx)

    async def apply_batch(self, events: Sequence[StoredEvent], tx: Transaction) -> None:
        """`apply` on each event in order."""
        await apply_handlers(_HANDLERS, events, tx)


async def _uploaded(e: ev.MapUploaded, seq: int, tx: Transaction) -> None:
    await tx.execute("INSERT INTO {maps} (id, name, filename, sha256, size_bytes, uploaded_at, updated_seq)"
                     " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                     e.map_id, e.name, e.filename, e.sha256, e.size, iso(e.uploaded_at), seq, key=str(e.map_id))


async def _deleted(e: ev.MapDeleted, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {maps} SET deleted_at = ?, updated_seq = ? WHERE id = ?",
                     iso(e.deleted_at), seq, e.map_id, key=str(e.map_id))


_HANDLERS: Handlers = {ev.MapUploaded: _uploaded, ev.MapDeleted: _deleted}

_WITH_COUNTS = ("SELECT m.*, (SELECT COUNT(*) FROM {jobs} j WHERE j.map_id = m.id AND j.kind = 'train') AS train_count,"
                " (SELECT COUNT(*) FROM {jobs} j WHERE j.map_id = m.id AND j.kind = 'eval') AS test_count"
                " FROM {maps} m")


async def list_maps(store: ReadModelStore) -> list[dict[str, Any]]:
    """Every map not deleted, oldest first, with how many training and evaluation runs used it."""
    return await store.fetchall(_WITH_COUNTS + " WHERE m.deleted_at IS NULL ORDER BY m.id")


async def get_map(store: ReadModelStore, map_id: int) -> dict[str, Any] | None:
    """One map (deleted or not), with its run counts."""
    return await store.fetchone(_WITH_COUNTS + " WHERE m.id = ?", map_id)


async def highest_map_id(store: ReadModelStore) -> int:
    """The highest map number the read model has seen (0: none)."""
    row = await store.fetchone("SELECT MAX(id) AS top FROM {maps}")
    return int(row["top"] or 0) if row else 0


async def map_users(store: ReadModelStore, map_id: int) -> list[str]:
    """Ids of the queued or running jobs that use a map."""
    marks = ", ".join("?" for _ in UNFINISHED_STATUSES)
    rows = await store.fetchall(f"SELECT id FROM {{jobs}} WHERE map_id = ? AND status IN ({marks}) ORDER BY id",
                                map_id, *UNFINISHED_STATUSES)
    return [r["id"] for r in rows]
