"""Reading the projections: jobs with filters and cursor pages, checkpoints, workers, checkpoints of runners."""

from __future__ import annotations

import base64
import binascii
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import msgspec

from contracts.errors import InvalidCommand
from eventstore.projection import CHECKPOINTS, create_tables, ensure_checkpoint_table
from eventstore.readmodels import all_projections
from eventstore.stores.base import ReadModelStore

ACTIVE = ("assigned", "running", "stopping")


async def ensure_tables(store: ReadModelStore) -> None:
    """Create the read models' tables if the projector has not yet (reads then see empty tables)."""
    await ensure_checkpoint_table(store)
    async with store.transaction() as tx:
        for projection in all_projections():
            await create_tables(tx, projection, store.dialect)


def encode_cursor(submitted_at: str, job_id: str) -> str:
    """An opaque cursor pointing after one job in the newest-first order."""
    return base64.urlsafe_b64encode(msgspec.json.encode([submitted_at, job_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """The (submitted_at, id) a cursor points after; InvalidCommand when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        submitted_at, job_id = msgspec.json.decode(raw, type=tuple[str, str])
    except (binascii.Error, ValueError, msgspec.DecodeError, msgspec.ValidationError):
        raise InvalidCommand("cursor is not one this API handed out") from None
    return submitted_at, job_id


async def list_jobs(store: ReadModelStore, *, statuses: Sequence[str] = (), kind: str | None = None,
                    workload: str | None = None, cursor: str | None = None,
                    limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """A page of job rows, newest first, and the cursor of the next page (None at the end)."""
    where, params = [], []
    if statuses:
        where.append(f"status IN ({', '.join('?' for _ in statuses)})")
        params.extend(statuses)
    for column, value in (("kind", kind), ("workload", workload)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if cursor:
        at, job_id = decode_cursor(cursor)
        where.append("(submitted_at < ? OR (submitted_at = ? AND id < ?))")
        params.extend([at, at, job_id])
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await store.fetchall(f"SELECT * FROM jobs{clause} ORDER BY submitted_at DESC, id DESC LIMIT ?",
                                *params, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]["submitted_at"], rows[-1]["id"]) if more else None


class PageCache:
    """Job pages by query, valid while the jobs projection's checkpoint stays where it was read at."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._pages: OrderedDict[tuple, tuple[int, Any]] = OrderedDict()

    def get(self, key: tuple, seq: int) -> Any | None:
        """The page cached for `key` at checkpoint `seq`, or None."""
        hit = self._pages.get(key)
        if hit is None or hit[0] != seq:
            return None
        self._pages.move_to_end(key)
        return hit[1]

    def put(self, key: tuple, seq: int, page: Any) -> None:
        """Remember a page read at checkpoint `seq`."""
        self._pages[key] = (seq, page)
        self._pages.move_to_end(key)
        while len(self._pages) > self.size:
            self._pages.popitem(last=False)


async def projection_seq(store: ReadModelStore, name: str) -> int:
    """One projection's checkpoint (0 when it has none yet)."""
    row = await store.fetchone(f"SELECT seq FROM {CHECKPOINTS} WHERE projection = ?", name)
    return int(row["seq"]) if row else 0


async def job_row(store: ReadModelStore, job_id: str) -> dict[str, Any] | None:
    """One job's row."""
    return await store.fetchone("SELECT * FROM jobs WHERE id = ?", job_id)


async def checkpoint_rows(store: ReadModelStore, job_id: str) -> list[dict[str, Any]]:
    """A job's checkpoints, oldest first."""
    return await store.fetchall("SELECT * FROM job_checkpoints WHERE job_id = ? ORDER BY seq", job_id)


async def active_job_ids(store: ReadModelStore, kind: str) -> list[str]:
    """Unfinished jobs of one kind (what a "stop all" reaches)."""
    rows = await store.fetchall("SELECT id FROM jobs WHERE kind = ? AND status IN (?, ?, ?, ?) ORDER BY id",
                                kind, "queued", *ACTIVE)
    return [r["id"] for r in rows]


async def worker_rows(store: ReadModelStore, worker_id: str | None = None) -> list[dict[str, Any]]:
    """Every worker's row (or one)."""
    if worker_id is not None:
        return await store.fetchall("SELECT * FROM workers WHERE id = ?", worker_id)
    return await store.fetchall("SELECT * FROM workers ORDER BY id")


async def running_by_worker(store: ReadModelStore) -> dict[str, list[str]]:
    """The jobs each worker holds (assigned, running or stopping)."""
    rows = await store.fetchall("SELECT id, worker_id FROM jobs WHERE status IN (?, ?, ?) ORDER BY id", *ACTIVE)
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["worker_id"], []).append(row["id"])
    return out


async def projection_checkpoints(store: ReadModelStore) -> dict[str, tuple[int, str | None]]:
    """{projection: (checkpoint seq, updated_at)} as the projector last wrote them."""
    rows = await store.fetchall(f"SELECT projection, seq, updated_at FROM {CHECKPOINTS}")
    return {r["projection"]: (int(r["seq"]), r["updated_at"]) for r in rows}
