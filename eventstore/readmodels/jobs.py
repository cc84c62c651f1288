"""The `jobs` read model: one row per job with its status, and one row per checkpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec

from contracts import events as ev
from eventstore.log import StoredEvent
from eventstore.observability import trace_id_of
from eventstore.stores.base import Transaction

ACTIVE_STATUSES = ("queued", "assigned", "running", "stopping")
TERMINAL_STATUSES = ("completed", "failed", "stopped", "timed_out")


def iso(moment: datetime | None) -> str | None:
    """A timestamp as sortable ISO-8601 text (how read models store time)."""
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def as_json(value: Any) -> str:
    """A value as JSON text (how read models store structures)."""
    return msgspec.json.encode(value).decode()


JSON_COLUMNS = {"params": {}, "labels": [], "result": None}  # stored as JSON text; default when NULL


def job_record(row: dict[str, Any]) -> dict[str, Any]:
    """A jobs row as data: its JSON columns decoded to objects and arrays, flags as booleans."""
    record = {**row, **{c: msgspec.json.decode(row[c]) if row.get(c) else d for c, d in JSON_COLUMNS.items()}}
    record["stop_requested"] = bool(row.get("stop_requested"))
    return record


class JobsProjection:
    """jobs(id, status, attempt, worker, …) and job_checkpoints(job_id, iteration, name, sha256, …)."""

    name = "jobs"
    version = 2  # 2: trace_id
    tables = ("jobs", "job_checkpoints")

    def ddl(self, dialect: str) -> list[str]:
        """Tables and indexes of the jobs read model."""
        real = "DOUBLE PRECISION" if dialect == "postgres" else "REAL"
        return [
            "CREATE TABLE IF NOT EXISTS {jobs} (id TEXT PRIMARY KEY, kind TEXT NOT NULL, workload TEXT NOT NULL,"
            " status TEXT NOT NULL, priority INTEGER NOT NULL, attempt INTEGER NOT NULL, worker_id TEXT,"
            " params TEXT NOT NULL, max_iterations BIGINT, episodes BIGINT, checkpoint_of TEXT,"
            " gpus INTEGER NOT NULL, labels TEXT NOT NULL, idempotency_key TEXT,"
            f" timeout_s {real}, max_retries INTEGER NOT NULL, submitted_at TEXT NOT NULL,"
            " assigned_at TEXT, started_at TEXT, finished_at TEXT, stop_requested INTEGER NOT NULL,"
            " resumed_from BIGINT, last_checkpoint TEXT, last_checkpoint_iteration BIGINT,"
            " checkpoints INTEGER NOT NULL, requeues INTEGER NOT NULL, error TEXT, traceback TEXT,"
            " result TEXT, updated_seq BIGINT NOT NULL, trace_id TEXT)",
            "CREATE INDEX IF NOT EXISTS {jobs}_status ON {jobs} (status, submitted_at)",
            "CREATE INDEX IF NOT EXISTS {jobs}_worker ON {jobs} (worker_id)",
            "CREATE INDEX IF NOT EXISTS {jobs}_submitted ON {jobs} (submitted_at, id)",  # newest-first pages
            "CREATE TABLE IF NOT EXISTS {job_checkpoints} (job_id TEXT NOT NULL, seq BIGINT NOT NULL,"
            " attempt INTEGER NOT NULL, iteration BIGINT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,"
            " size BIGINT NOT NULL, checkpointed_at TEXT NOT NULL, PRIMARY KEY (job_id, seq))",
        ]

    async def apply(self, stored: StoredEvent, tx: Transaction) -> None:
        """Update the job's row (and checkpoint rows) for one event."""
        handler = _HANDLERS.get(type(stored.event))
        if handler is not None:
            await handler(stored.event, stored.seq, tx)


async def _submitted(e: ev.JobSubmitted, seq: int, tx: Transaction) -> None:
    await tx.execute(
        "INSERT INTO {jobs} (id, kind, workload, status, priority, attempt, worker_id, params, max_iterations,"
        " episodes, checkpoint_of, gpus, labels, idempotency_key, timeout_s, max_retries, submitted_at,"
        " stop_requested, checkpoints, requeues, updated_seq, trace_id)"
        " VALUES (?, ?, ?, 'queued', ?, 1, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, ?, ?)"
        " ON CONFLICT (id) DO NOTHING",
        e.job_id, e.kind, e.workload, e.priority, as_json(e.params), e.max_iterations, e.episodes,
        e.checkpoint_of, e.gpus, as_json(list(e.labels)), e.idempotency_key, e.timeout_s, e.max_retries,
        iso(e.submitted_at), seq, trace_id_of(e.traceparent) or None, key=e.job_id)


async def _assigned(e: ev.JobAssigned, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET status = 'assigned', attempt = ?, worker_id = ?, assigned_at = ?,"
                     " updated_seq = ? WHERE id = ?", e.attempt, e.worker_id, iso(e.assigned_at), seq, e.job_id,
                     key=e.job_id)


async def _started(e: ev.JobStarted, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET status = CASE WHEN stop_requested = 1 THEN 'stopping' ELSE 'running'"
                     " END, attempt = ?, worker_id = ?, started_at = COALESCE(started_at, ?), resumed_from = ?,"
                     " updated_seq = ? WHERE id = ?",
                     e.attempt, e.worker_id, iso(e.started_at), e.resumed_from, seq, e.job_id, key=e.job_id)


async def _checkpointed(e: ev.JobCheckpointed, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET last_checkpoint = ?, last_checkpoint_iteration = ?,"
                     " checkpoints = checkpoints + 1, updated_seq = ? WHERE id = ?",
                     e.name, e.iteration, seq, e.job_id, key=e.job_id)
    await tx.execute("INSERT INTO {job_checkpoints} (job_id, seq, attempt, iteration, name, sha256, size,"
                     " checkpointed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, seq) DO NOTHING",
                     e.job_id, seq, e.attempt, e.iteration, e.name, e.sha256, e.size, iso(e.checkpointed_at),
                     key=e.job_id)


async def _completed(e: ev.JobCompleted, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET status = 'completed', result = ?, finished_at = ?, error = NULL,"
                     " updated_seq = ? WHERE id = ?", as_json(e.result), iso(e.completed_at), seq, e.job_id,
                     key=e.job_id)


async def _failed(e: ev.JobFailed, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET status = 'failed', error = ?, traceback = ?, finished_at = ?,"
                     " updated_seq = ? WHERE id = ?", e.error, e.traceback, iso(e.failed_at), seq, e.job_id,
                     key=e.job_id)


async def _stop_requested(e: ev.JobStopRequested, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET stop_requested = 1, status = CASE WHEN status IN ('running', 'assigned')"
                     " THEN 'stopping' ELSE status END, updated_seq = ? WHERE id = ?", seq, e.job_id, key=e.job_id)


async def _stopped(e: ev.JobStopped, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET status = 'stopped', finished_at = ?, error = NULL, updated_seq = ?"
                     " WHERE id = ?", iso(e.stopped_at), seq, e.job_id, key=e.job_id)


async def _requeued(e: ev.JobRequeued, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET status = 'queued', attempt = ?, worker_id = NULL, finished_at = NULL,"
                     " requeues = requeues + 1, updated_seq = ? WHERE id = ?", e.attempt, seq, e.job_id, key=e.job_id)


async def _timed_out(e: ev.JobTimedOut, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET status = 'timed_out', error = 'timed out', finished_at = ?,"
                     " updated_seq = ? WHERE id = ?", iso(e.timed_out_at), seq, e.job_id, key=e.job_id)


_HANDLERS: dict[type, Callable[[Any, int, Transaction], Awaitable[None]]] = {
    ev.JobSubmitted: _submitted, ev.JobAssigned: _assigned, ev.JobStarted: _started,
    ev.JobCheckpointed: _checkpointed, ev.JobCompleted: _completed, ev.JobFailed: _failed,
    ev.JobStopRequested: _stop_requested, ev.JobStopped: _stopped, ev.JobRequeued: _requeued,
    ev.JobTimedOut: _timed_out,
}
