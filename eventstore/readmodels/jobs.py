"""The `jobs` read model: one row per job with its status, and one row per checkpoint; and its queries."""

from __future__ import annotations

import base64
import binascii
import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi

from contracts import events as ev
from contracts.errors import InvalidCommand
from contracts.jobspec import SPEC_FIELDS, JobSpec
from contracts.status import ON_WORKER_STATUSES
from eventstore.log import StoredEvent
from eventstore.observability import trace_id_of
from eventstore.stores.base import ReadModelStore, Transaction


def iso(moment: datetime | None) -> str | None:
    """A timestamp as sortable ISO-8601 text (how read models store time): UTC, always with microseconds, so
    that text order is time order (`…:05Z` sorted after `…:05.5Z`, and a job submitted on a whole second was
    paged out of place)."""
    if moment is None:
        return None
    if moment.tzinfo is UTC:  # as events carry time: the offset's text "+00:00" becomes the "Z"
        return moment.isoformat(timespec="microseconds")[:-6] + "Z"
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


def spec_row(spec: Any) -> dict[str, Any]:
    """A job's spec (a JobSpec, or what carries its fields: a JobSubmitted) as the values of its columns."""
    row = dict(zip(SPEC_FIELDS, _spec_values(spec), strict=True))
    for name in _SPEC_JSON:
        row[name] = as_json(row[name])
    for name in _SPEC_FLAGS:
        row[name] = int(row[name])
    return row


_spec_values = operator.attrgetter(*SPEC_FIELDS)


# Every column of `jobs`, in table order: how a row is read and written whole.
COLUMNS: tuple[str, ...] = (
    "id", "kind", "workload", "status", "priority", "attempt", "worker_id", "params", "max_iterations", "episodes",
    "checkpoint_of", "gpus", "labels", "idempotency_key", "timeout_s", "max_retries", "submitted_at", "assigned_at",
    "started_at", "finished_at", "stop_requested", "resumed_from", "last_checkpoint", "last_checkpoint_iteration",
    "checkpoints", "requeues", "error", "traceback", "result", "updated_seq", "trace_id", "map_id", "map_sha256",
    "map_filename", "action_combinations", "stall_after_s", "on_stall", "checkpoint_ref", "params_version")
_SELECT_COLUMNS = ", ".join(COLUMNS)
_UPSERT = (f"INSERT INTO {{jobs}} ({_SELECT_COLUMNS}) VALUES ({', '.join('?' for _ in COLUMNS)}) ON CONFLICT (id)"
           f" DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in COLUMNS[1:])}")
_row_values = operator.itemgetter(*COLUMNS)
_READ_CHUNK = 500  # ids per lookup of a batch's existing rows (well under any store's parameter limit)


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
        await self.apply_batch((stored,), tx)

    async def apply_batch(self, events: Sequence[StoredEvent], tx: Transaction) -> None:
        """Apply events in order, as one by one would: each job's row is read once (if it exists), folded in
        memory through the batch's events of that job, and written once."""
        ours = [stored for stored in events if type(stored.event) in JOB_EVENTS]
        if not ours:
            return
        ids = list(dict.fromkeys(stored.event.job_id for stored in ours))
        rows: dict[str, dict[str, Any] | None] = dict.fromkeys(ids)
        for start in range(0, len(ids), _READ_CHUNK):
            chunk = ids[start:start + _READ_CHUNK]
            found = await tx.fetchall(f"SELECT {_SELECT_COLUMNS} FROM {{jobs}} WHERE id IN"
                                      f" ({', '.join('?' for _ in chunk)})", *chunk)
            rows.update((row["id"], row) for row in found)
        work: dict[str, dict[str, Any] | None] = {}  # the rows as this batch folds them, copies of those read
        for stored in ours:
            e = stored.event
            if e.job_id not in work:
                found = rows[e.job_id]
                work[e.job_id] = dict(found) if found is not None else None
            work[e.job_id] = evolve(work[e.job_id], e, stored.seq)
            await _side_rows(e, stored.seq, tx)
        for job_id, row in work.items():
            if row is not None and row != rows[job_id]:
                await tx.execute(_UPSERT, *_row_values(row), key=job_id)

def submitted_row(e: ev.JobSubmitted, seq: int) -> dict[str, Any]:
    """The row a JobSubmitted creates (every column: those nothing has set yet are NULL)."""
    return dict.fromkeys(COLUMNS) | {
        "id": e.job_id, **spec_row(e), "status": "queued", "attempt": 1, "idempotency_key": e.idempotency_key,
        "submitted_at": iso(e.submitted_at), "stop_requested": 0, "checkpoints": 0, "requeues": 0,
        "updated_seq": seq, "trace_id": trace_id_of(e.traceparent) or None}


def evolve(row: dict[str, Any] | None, e: Any, seq: int) -> dict[str, Any] | None:
    """A job's row after one of its events (None: it still has none), changed in place: a JobSubmitted makes
    the row (a second one of an id changes nothing); any other event changes only a row that exists."""
    if type(e) is ev.JobSubmitted:
        return submitted_row(e, seq) if row is None else row
    if row is not None:
        _STEPS[type(e)](row, e, seq)
    return row


# How each event after the submission changes a job's row, in place.
Step = Callable[[dict[str, Any], Any, int], None]


def _assigned(row: dict[str, Any], e: ev.JobAssigned, seq: int) -> None:
    row.update(status="assigned", attempt=e.attempt, worker_id=e.worker_id, assigned_at=iso(e.assigned_at),
               updated_seq=seq)


def _started(row: dict[str, Any], e: ev.JobStarted, seq: int) -> None:
    row.update(status="stopping" if row["stop_requested"] == 1 else "running", attempt=e.attempt,
               worker_id=e.worker_id, resumed_from=e.resumed_from, updated_seq=seq,
               started_at=row["started_at"] if row["started_at"] is not None else iso(e.started_at))


def _checkpointed(row: dict[str, Any], e: ev.JobCheckpointed, seq: int) -> None:
    row.update(last_checkpoint=e.name, last_checkpoint_iteration=e.iteration,
               checkpoints=row["checkpoints"] + 1, updated_seq=seq)


def _completed(row: dict[str, Any], e: ev.JobCompleted, seq: int) -> None:
    row.update(status="completed", result=as_json(e.result), finished_at=iso(e.completed_at), error=None,
               updated_seq=seq)


def _failed(row: dict[str, Any], e: ev.JobFailed, seq: int) -> None:
    row.update(status="failed", error=e.error, traceback=e.traceback, finished_at=iso(e.failed_at),
               updated_seq=seq)


def _stop_requested(row: dict[str, Any], e: ev.JobStopRequested, seq: int) -> None:
    row.update(stop_requested=1, updated_seq=seq,
               status="stopping" if row["status"] in ("running", "assigned") else row["status"])


def _stopped(row: dict[str, Any], e: ev.JobStopped, seq: int) -> None:
    row.update(status="stopped", finished_at=iso(e.stopped_at), error=None, updated_seq=seq)


def _requeued(row: dict[str, Any], e: ev.JobRequeued, seq: int) -> None:
    row.update(status="queued", attempt=e.attempt, worker_id=None, finished_at=None,
               requeues=row["requeues"] + 1, updated_seq=seq)


def _timed_out(row: dict[str, Any], e: ev.JobTimedOut, seq: int) -> None:
    row.update(status="timed_out", error="timed out", finished_at=iso(e.timed_out_at), updated_seq=seq)


_STEPS: dict[type, Step] = {
    ev.JobAssigned: _assigned, ev.JobStarted: _started,
    ev.JobCheckpointed: _checkpointed, ev.JobCompleted: _completed, ev.JobFailed: _failed,
    ev.JobStopRequested: _stop_requested, ev.JobStopped: _stopped, ev.JobRequeued: _requeued,
    ev.JobTimedOut: _timed_out,
}
JOB_EVENTS = frozenset({ev.JobSubmitted, *_STEPS})  # the events that change the jobs read model


async def _side_rows(e: Any, seq: int, tx: Transaction) -> None:
    """The rows of the other tables an event adds, whether or not its job has a row (as ever)."""
    if type(e) is ev.JobAssigned:
        await tx.execute("INSERT INTO {job_workers} (job_id, worker_id, seq) VALUES (?, ?, ?)"
                         " ON CONFLICT (job_id, worker_id) DO UPDATE SET seq = excluded.seq", e.job_id, e.worker_id,
                         seq, key=e.job_id)
    elif type(e) is ev.JobCheckpointed:
        await tx.execute("INSERT INTO {job_checkpoints} (job_id, seq, attempt, iteration, name, sha256, size,"
                         " checkpointed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, seq) DO NOTHING",
                         e.job_id, seq, e.attempt, e.iteration, e.name, e.sha256, e.size, iso(e.checkpointed_at),
                         key=e.job_id)


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


async def fold_job(events: Sequence[StoredEvent]) -> dict[str, Any] | None:
    """The jobs row the projection would write for these events (the very same steps, in memory)."""
    row: dict[str, Any] | None = None
    for stored in events:
        if type(stored.event) in JOB_EVENTS:
            row = evolve(row, stored.event, stored.seq)
    return row


async def count_jobs_by_status(store: ReadModelStore) -> dict[str, int]:
    """How many jobs are in each status."""
    rows = await store.fetchall("SELECT status, COUNT(*) AS n FROM {jobs} GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}


async def oldest_queued_at(store: ReadModelStore) -> str | None:
    """When the longest-waiting queued job was submitted (ISO text), or None with an empty queue."""
    row = await store.fetchone("SELECT MIN(submitted_at) AS at FROM {jobs} WHERE status = 'queued'")
    return row["at"] if row else None
