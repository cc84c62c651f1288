"""Telemetry: high-rate, disposable samples in the STOKER_TELEMETRY stream."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from contracts.base import Id, Message, NonNegative, SmallNonNegative


class JobProgress(Message, kw_only=True):
    """A progress sample of one job attempt."""

    job_id: Id
    attempt: SmallNonNegative
    worker_id: Id
    iteration: NonNegative
    total: NonNegative | None = None  # max_iterations, or episodes for an evaluation
    loss: float | None = None
    metrics: dict[str, float] = {}
    at: datetime


class EpisodeReport(Message, kw_only=True):
    """One finished evaluation episode, with its figures and move-by-move log."""

    job_id: Id
    attempt: SmallNonNegative
    episode: NonNegative
    score: float
    figures: dict[str, float] = {}
    log: list[dict[str, Any]] = []
    at: datetime


class WorkerHeartbeat(Message, kw_only=True):
    """A worker is alive: what it runs, how many slots are free, and how loaded its host is."""

    worker_id: Id
    running: tuple[str, ...] = ()
    free_slots: SmallNonNegative = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    at: datetime
