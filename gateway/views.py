"""Rows and events turned into response bodies; a job the projector has not reached yet is folded from the log."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from eventstore.log import StoredEvent
from eventstore.readmodels.jobs import JobsProjection, job_record
from eventstore.stores.base import IdentityTables
from gateway.schemas.jobs import CheckpointView, JobView, TimelineEntry
from gateway.schemas.system import EventRecord
from gateway.schemas.workers import WorkerView


def _json(text: str | None, default: Any) -> Any:
    return msgspec.json.decode(text) if text else default


def job_view(row: dict[str, Any]) -> JobView:
    """A jobs row as the API shows it."""
    return msgspec.convert(job_record(row), JobView)


def checkpoint_view(row: dict[str, Any]) -> CheckpointView:
    """A job_checkpoints row."""
    return msgspec.convert(row, CheckpointView)


def worker_view(row: dict[str, Any], running: list[str], heartbeat: Any | None) -> WorkerView:
    """A workers row with its newest heartbeat and the jobs it holds."""
    fields = {**row, "addresses": _json(row["addresses"], []), "gpus": _json(row["gpus"], []),
              "labels": _json(row["labels"], []), "running_jobs": running,
              "last_seen": heartbeat.at if heartbeat else None,
              "free_slots": heartbeat.free_slots if heartbeat else None,
              "cpu_percent": heartbeat.cpu_percent if heartbeat else None,
              "memory_percent": heartbeat.memory_percent if heartbeat else None}
    return msgspec.convert(fields, WorkerView)


def timeline_entry(stored: StoredEvent) -> TimelineEntry:
    """One event of a job's timeline."""
    return TimelineEntry(seq=stored.seq, time=stored.time, type=stored.type,
                         event=msgspec.to_builtins(stored.event))


def event_record(stored: StoredEvent) -> EventRecord:
    """One event of the admin feed."""
    return EventRecord(seq=stored.seq, time=stored.time, subject=stored.subject, type=stored.type,
                       aggregate=stored.aggregate, aggregate_id=stored.aggregate_id, event_id=stored.event_id,
                       correlation_id=stored.correlation_id, event=msgspec.to_builtins(stored.event))


class _MemoryTransaction:
    """The Transaction protocol over an in-memory SQLite connection, on this thread (tiny folds only)."""

    def __init__(self) -> None:
        self.db = sqlite3.connect(":memory:")
        self.tables = IdentityTables()

    async def execute(self, sql: str, *params: Any, key: str | None = None) -> None:
        self.db.execute(sql.format_map(self.tables), params)

    async def fetchall(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        cursor = self.db.execute(sql.format_map(self.tables), params)
        names = [d[0] for d in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    async def fetchone(self, sql: str, *params: Any) -> dict[str, Any] | None:
        rows = await self.fetchall(sql, *params)
        return rows[0] if rows else None


async def fold_job(events: Sequence[StoredEvent]) -> dict[str, Any] | None:
    """The jobs row the projection would write for these events (the very same code, in memory)."""
    projection = JobsProjection()
    tx = _MemoryTransaction()
    try:
        for statement in projection.ddl("sqlite"):
            await tx.execute(statement)
        for stored in events:
            await projection.apply(stored, tx)
        return await tx.fetchone("SELECT * FROM jobs")
    finally:
        tx.db.close()


def elapsed_between(start: datetime | None, end: datetime | None, now: datetime) -> float:
    """Seconds from `start` to `end` (or now); 0 when it never started."""
    if start is None:
        return 0.0
    return max(0.0, ((end or now) - start).total_seconds())
