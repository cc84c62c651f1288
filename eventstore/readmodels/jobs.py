"""The `jobs` read model: one row per job with its status, and one row per checkpoint; and its queries."""

from __future__ import annotations

import base64
import binascii
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi

from contracts import events as ev
from contracts.errors import InvalidCommand
from contracts.jobspec import JobSpec, spec_fields
from contracts.status import ON_WORKER_STATUSES
from eventstore.log import StoredEvent
from eventstore.observability import trace_id_of
from eventstore.readmodels import Handlers, apply_handler
from eventstore.stores.base import IdentityTables, ReadModelStore, Transaction


def iso(moment: datetime | None) -> str | None:
    """A timestamp as sortable ISO-8601 text (how read models store time): UTC, always with microseconds, so
    that text order is time order (`…:05Z` sorted after `…:05.5Z`, and a job submitted on a whole second was
    paged out of place)."""
    if moment is None:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def as_json(value: Any) -> str:
    """A value as JSON text (how read models store structures)."""
    return msgspec.json.encode(value).decode()


def _spec_columns() -> tuple[dict[str, Any], tuple[str, ...]]:
    """How the JobSpec's fields are stored, one column each: structures as JSON text, flags as 0/1."""
    scalars = (mi.IntType, mi.FloatType, mi.StrType, mi.BoolType, mi.LiteralType, mi.NoneType)
    as_text, flags = {}, []
    for field in mi.type_info(JobSpec).fields:
        types = field.type.types if isinstance(field.type, mi.UnionType) else (field.type,)
        if not all(isinstance(t, scalars) for t in types):
            default = field.default_factory() if field.default_factory is not msgspec.NODEFAULT else field.default
            as_text[field.name] = None if default is msgspec.NODEFAULT else msgspec.json.decode(as_json(default))
        elif any(isinstance(t, mi.BoolType) for t in types):
            flags.append(field.name)
    return as_text, tuple(flags)


# Every field of JobSpec is a column of its own: one JobSpec gains a field, `jobs` gains a column (and a
# version). Columns stored as JSON text, with what a NULL one means; and those holding flags.
_SPEC_JSON, _SPEC_FLAGS = _spec_columns()
JSON_COLUMNS = {**_SPEC_JSON, "result": None}
FLAG_COLUMNS = (*_SPEC_FLAGS, "stop_requested")


def job_record(row: dict[str, Any]) -> dict[str, Any]:
    """A jobs row as data: its JSON columns decoded to objects and arrays, flags as booleans."""
    record = {**row, **{c: msgspec.json.decode(row[c]) if row.get(c) else d for c, d in JSON_COLUMNS.items()}}
    record.update({c: bool(row.get(c)) for c in FLAG_COLUMNS})
    return record


def spec_row(spec: JobSpec) -> dict[str, Any]:
    """A job's spec as the values of its columns."""
    return {name: as_json(value) if name in _SPEC_JSON else int(value) if name in _SPEC_FLAGS else value
            for name, value in spec_fields(spec).items()}


class JobsProjection:
    """jobs(id, status, attempt, worker, …), job_checkpoints(job_id, iteration, name, sha256, …) and
    job_workers(job_id, worker_id): every worker a JobAssigned of the job named (whose telemetry readers believe)."""

    name = "jobs"
    version = 6  # 2: trace_id; 3: map_id, map_sha256, map_filename, action_combinations; 4: stall_after_s,
    # on_stall; 5: checkpoint_ref, params_version; 6: job_workers
    tables = ("jobs", "job_checkpoints", "job_workers")

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
            " result TEXT, updated_seq BIGINT NOT NULL, trace_id TEXT, map_id BIGINT,"
            " map_sha256 TEXT, map_filename TEXT, action_combinations TEXT,"
            f" stall_after_s {real}, on_stall TEXT NOT NULL DEFAULT 'alert', checkpoint_ref TEXT,"
            " params_version INTEGER NOT NULL DEFAULT 0)",
            "CREATE INDEX IF NOT EXISTS {jobs}_status ON {jobs} (status, submitted_at)",
            "CREATE INDEX IF NOT EXISTS {jobs}_worker ON {jobs} (worker_id)",
            "CREATE INDEX IF NOT EXISTS {jobs}_submitted ON {jobs} (submitted_at, id)",  # newest-first pages
            "CREATE TABLE IF NOT EXISTS {job_checkpoints} (job_id TEXT NOT NULL, seq BIGINT NOT NULL,"
            " attempt INTEGER NOT NULL, iteration BIGINT NOT NULL, name TEXT NOT NULL, sha256 TEXT NOT NULL,"
            " size BIGINT NOT NULL, checkpointed_at TEXT NOT NULL, PRIMARY KEY (job_id, seq))",
            "CREATE TABLE IF NOT EXISTS {job_workers} (job_id TEXT NOT NULL, worker_id TEXT NOT NULL,"
            " seq BIGINT NOT NULL, PRIMARY KEY (job_id, worker_id))",
        ]

    async def apply(self, stored: StoredEvent, tx: Transaction) -> None:
        """Update the job's row (and checkpoint rows) for one event."""
        await apply_handler(_HANDLERS, stored, tx)


async def _submitted(e: ev.JobSubmitted, seq: int, tx: Transaction) -> None:
    row = {"id": e.job_id, **spec_row(e.spec), "status": "queued", "attempt": 1, "idempotency_key": e.idempotency_key,
           "submitted_at": iso(e.submitted_at), "stop_requested": 0, "checkpoints": 0, "requeues": 0,
           "updated_seq": seq, "trace_id": trace_id_of(e.traceparent) or None}
    await tx.execute(f"INSERT INTO {{jobs}} ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})"
                     " ON CONFLICT (id) DO NOTHING", *row.values(), key=e.job_id)


async def _assigned(e: ev.JobAssigned, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {jobs} SET status = 'assigned', attempt = ?, worker_id = ?, assigned_at = ?,"
                     " updated_seq = ? WHERE id = ?", e.attempt, e.worker_id, iso(e.assigned_at), seq, e.job_id,
                     key=e.job_id)
    await tx.execute("INSERT INTO {job_workers} (job_id, worker_id, seq) VALUES (?, ?, ?)"
                     " ON CONFLICT (job_id, worker_id) DO UPDATE SET seq = excluded.seq", e.job_id, e.worker_id, seq,
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


_HANDLERS: Handlers = {
    ev.JobSubmitted: _submitted, ev.JobAssigned: _assigned, ev.JobStarted: _started,
    ev.JobCheckpointed: _checkpointed, ev.JobCompleted: _completed, ev.JobFailed: _failed,
    ev.JobStopRequested: _stop_requested, ev.JobStopped: _stopped, ev.JobRequeued: _requeued,
    ev.JobTimedOut: _timed_out,
}


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
    where: list[str] = []
    params: list[Any] = []
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
    rows = await store.fetchall("SELECT * FROM {jobs}" + clause + " ORDER BY submitted_at DESC, id DESC LIMIT ?",
                                *params, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1]["submitted_at"], rows[-1]["id"]) if more else None


async def get_job(store: ReadModelStore, job_id: str) -> dict[str, Any] | None:
    """One job's row, or None."""
    return await store.fetchone("SELECT * FROM {jobs} WHERE id = ?", job_id)


async def job_checkpoints(store: ReadModelStore, job_id: str) -> list[dict[str, Any]]:
    """A job's checkpoint rows, oldest first."""
    return await store.fetchall("SELECT * FROM {job_checkpoints} WHERE job_id = ? ORDER BY seq", job_id)


async def job_workers(store: ReadModelStore, job_id: str) -> list[str]:
    """Every worker the job was ever assigned to (whose telemetry of it is believed), the latest assigned last."""
    rows = await store.fetchall("SELECT worker_id FROM {job_workers} WHERE job_id = ? ORDER BY seq", job_id)
    return [row["worker_id"] for row in rows]


async def find_checkpoint(store: ReadModelStore, name: str) -> dict[str, Any] | None:
    """The checkpoint row stored under object name `name` (`<job_id>/<attempt>-<iteration>`), or None."""
    return await store.fetchone("SELECT * FROM {job_checkpoints} WHERE job_id = ? AND name = ?",
                                name.split("/", 1)[0], name)


async def jobs_on_workers(store: ReadModelStore) -> dict[str, list[str]]:
    """The jobs each worker holds (assigned, running or stopping), by worker id."""
    marks = ", ".join("?" for _ in ON_WORKER_STATUSES)
    rows = await store.fetchall(f"SELECT id, worker_id FROM {{jobs}} WHERE status IN ({marks}) ORDER BY id",
                                *ON_WORKER_STATUSES)
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["worker_id"], []).append(row["id"])
    return out


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
        return await tx.fetchone("SELECT * FROM {jobs}")
    finally:
        tx.db.close()


async def count_jobs_by_status(store: ReadModelStore) -> dict[str, int]:
    """How many jobs are in each status."""
    rows = await store.fetchall("SELECT status, COUNT(*) AS n FROM {jobs} GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}


async def oldest_queued_at(store: ReadModelStore) -> str | None:
    """When the longest-waiting queued job was submitted (ISO text), or None with an empty queue."""
    row = await store.fetchone("SELECT MIN(submitted_at) AS at FROM {jobs} WHERE status = 'queued'")
    return row["at"] if row else None
