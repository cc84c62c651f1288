"""Bodies of /api/v1/training and /api/v1/testing: field-compatible with the user's earlier API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from gateway.schemas.common import Body, Episodes, Id, Iterations, Params, Reply, Workload

RunStatus = Literal["pending", "running", "stopped", "completed", "failed"]
Seconds = Annotated[float, msgspec.Meta(ge=0)]


class TrainingStart(Body, kw_only=True):
    """Start a training run of `workload` for `max_iterations`."""

    workload: Workload = "2048"
    max_iterations: Iterations
    params: Params = {}
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None


class TrainingStarted(Reply, kw_only=True):
    """A training run was queued; `training_id` is its job id."""

    training_id: str
    status: RunStatus
    workload: str
    max_iterations: int | None
    params: dict[str, Any]
    started_at: datetime


class TrainingStop(Body, kw_only=True):
    """Stop one training run, or (without `training_id`) every unfinished one."""

    training_id: Id | None = None


class TrainingStopped(Reply, kw_only=True):
    """What a stop request reached."""

    stopped_count: int
    training_ids: list[str]
    message: str


class TrainingProgress(Reply, kw_only=True):
    """How far a training run is."""

    current_iteration: int
    max_iterations: int | None
    progress_percent: float
    elapsed_seconds: Seconds
    estimated_remaining_seconds: Seconds | None


class LatestMetrics(Reply, kw_only=True):
    """The newest progress report."""

    iteration: int
    loss: float | None
    timestamp: datetime
    metrics: dict[str, float] = {}


class TrainingStatus(Reply, kw_only=True):
    """A training run's status, progress and newest metrics."""

    training_id: str
    status: RunStatus
    workload: str
    progress: TrainingProgress
    latest_metrics: LatestMetrics | None
    started_at: datetime | None
    error: str | None = None


class IterationLoss(Reply, kw_only=True):
    """The loss reported at one iteration."""

    iteration: int
    loss: float | None
    timestamp: datetime


class TrainingLogs(Reply, kw_only=True):
    """Every reported iteration of a training run with loss statistics."""

    training_id: str
    max_iterations: int | None
    final_iteration: int
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: Seconds | None
    iterations: list[IterationLoss]
    max_loss: float | None
    min_loss: float | None
    mean_loss: float | None
    final_loss: float | None


class TestingStart(Body, kw_only=True):
    """Evaluate the newest checkpoint of training run `checkpoint` over `episodes` games."""

    checkpoint: Id
    episodes: Episodes
    params: Params = {}
    workload: Workload = "2048"


class TestingStarted(Reply, kw_only=True):
    """An evaluation run was queued; `test_id` is its job id."""

    test_id: str
    status: RunStatus
    checkpoint: str
    episodes: int
    workload: str
    started_at: datetime


class TestingStop(Body, kw_only=True):
    """Stop one evaluation run, or (without `test_id`) every unfinished one."""

    test_id: Id | None = None


class TestingStopped(Reply, kw_only=True):
    """What a stop request reached."""

    stopped_count: int
    test_ids: list[str]
    message: str


class TestingProgress(Reply, kw_only=True):
    """How far an evaluation run is."""

    current_episode: int
    total_episodes: int | None
    progress_percent: float
    elapsed_seconds: Seconds
    estimated_remaining_seconds: Seconds | None


class EpisodeSummary(Reply, kw_only=True):
    """One finished evaluation episode: its score and other figures (max_tile, moves, …)."""

    episode: int
    score: float
    figures: dict[str, float]
    moves_logged: int
    timestamp: datetime


class TestingStatus(Reply, kw_only=True):
    """An evaluation run's status, progress and newest episode."""

    test_id: str
    status: RunStatus
    checkpoint: str | None
    progress: TestingProgress
    latest_episode: EpisodeSummary | None
    started_at: datetime | None
    error: str | None = None


class Stats(Reply, kw_only=True):
    """Summary statistics of one figure over the episodes (std is the population's)."""

    min: float
    max: float
    mean: float
    median: float
    std: float


class TestingResults(Reply, kw_only=True):
    """Every episode of an evaluation run and per-figure statistics."""

    test_id: str
    status: RunStatus
    checkpoint: str | None
    episodes: list[EpisodeSummary]
    aggregate_metrics: dict[str, Stats]
    result: dict[str, Any] | None


class EpisodeLog(Reply, kw_only=True):
    """One episode's move-by-move log (moves, rewards/merges, score over time)."""

    test_id: str
    episode: int
    score: float
    figures: dict[str, float]
    timestamp: datetime
    log: list[dict[str, Any]]
