"""Read-model records and events turned into response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from contracts.telemetry import JobProgress, WorkerHeartbeat
from eventstore.readmodels.jobs import job_record
from eventstore.records import StoredEvent, event_record
from gateway.schemas.jobs import CheckpointView, JobView, RowProgress, TimelineEntry
from gateway.schemas.system import EventRecord
from gateway.schemas.workers import WorkerView


def job_view(row: dict[str, Any]) -> JobView:
    """A jobs row as the API shows it."""
    return msgspec.convert(job_record(row), JobView)


def row_progress(sample: JobProgress, total: int | None) -> RowProgress:
    """A job's newest progress report as its list row shows it."""
    total = total or sample.total
    percent = round(min(100.0, 100.0 * sample.iteration / total), 3) if total else None
    return RowProgress(iteration=sample.iteration, total=total, progress_percent=percent, loss=sample.loss,
                       at=sample.at)


def checkpoint_view(row: dict[str, Any]) -> CheckpointView:
    """A job_checkpoints row."""
    return msgspec.convert(row, CheckpointView)


def worker_view(record: dict[str, Any], running: list[str], heartbeat: WorkerHeartbeat | None) -> WorkerView:
    """A worker record with its newest heartbeat and the jobs it holds."""
    fields = {**record, "running_jobs": running,
              "last_seen": heartbeat.at if heartbeat else None,
              "free_slots": heartbeat.free_slots if heartbeat else None,
              "cpu_percent": heartbeat.cpu_percent if heartbeat else None,
              "memory_percent": heartbeat.memory_percent if heartbeat else None}
    return msgspec.convert(fields, WorkerView)


def timeline_entry(stored: StoredEvent) -> TimelineEntry:
    """One event of a job's timeline."""
    return msgspec.convert(event_record(stored), TimelineEntry)


def event_view(stored: StoredEvent) -> EventRecord:
    """One event of the admin feed."""
    return msgspec.convert(event_record(stored), EventRecord)


def elapsed_between(start: datetime | None, end: datetime | None, now: datetime) -> float:
    """Seconds from `start` to `end` (or now); 0 when it never started."""
    if start is None:
        return 0.0
    return max(0.0, ((end or now) - start).total_seconds())
