"""Bodies of /api/v1/training and /api/v1/testing: field-compatible with the user's earlier API.

Every field the earlier API's specification shows is here with its name and JSON type; stoker's own
fields (`workload`, `state`, `loss`, `figures`, …) stand beside them. docs/api-compat.md says where a
field's meaning differs from the specification's and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from contracts.jobspec import ActionCombinations
from gateway.schemas.common import Body, Episodes, Id, Iterations, MapId, Params, Reply, Workload

RunStatus = Literal["pending", "running", "stopped", "completed", "failed"]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
# An episode as the earlier API shows it: `episode_num`, the workload's figures flat (score, max_tile,
# moves, …), `duration_seconds`, `timestamp`; stoker's `episode`, `figures`, `moves_logged` beside them.
EpisodeRow = dict[str, Any]


# A training id (its newest good checkpoint), or a stored checkpoint's name (`<training_id>/<attempt>-<iteration>`,
# as GET /api/v1/jobs/{id}/checkpoints lists them).
CheckpointChoice = Annotated[str, msgspec.Meta(max_length=200, pattern=r"^[A-Za-z0-9_-]{1,64}(/\d{1,6}-\d{1,19})?$",
                                               description="a training id, or the name of a stored checkpoint")]
StrictParams = Annotated[bool, msgspec.Meta(description="false: params the workload does not declare pass unchecked")]


class TrainingStart(Body, kw_only=True):
    """Start a training run of `workload` for `max_iterations`."""

    map_id: MapId | None = None
    max_iterations: Iterations
    action_combinations: ActionCombinations | None = None
    params: Params = {}
    workload: Workload = "2048"
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    strict_params: StrictParams = True


class TrainingStarted(Reply, kw_only=True):
    """A training run was queued; `training_id` (and `task_id`) is its job id, `state` where it stands."""

    training_id: str
    status: Literal["started"]
    map_id: int | None
    max_iterations: int | None
    started_at: datetime
    task_id: str
    state: RunStatus
    workload: str
    params: dict[str, Any]
    action_combinations: str | None


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
    """The newest progress report; `dqn_loss` is the loss the workload reports (also as `loss`)."""

    iteration: int
    dqn_loss: float | None
    timestamp: datetime
    loss: float | None
    metrics: dict[str, float] = {}


class TrainingStatus(Reply, kw_only=True):
    """A training run's status, progress and newest metrics."""

    training_id: str
    status: RunStatus
    map_id: int | None
    map_name: str | None
    progress: TrainingProgress
    latest_metrics: LatestMetrics | None
    started_at: datetime | None
    workload: str
    error: str | None = None


class IterationLoss(Reply, kw_only=True):
    """The loss reported at one iteration (`dqn_loss` and `loss` alike)."""

    iteration: int
    dqn_loss: float | None
    timestamp: datetime
    loss: float | None


class TrainingLogs(Reply, kw_only=True):
    """Every reported iteration of a training run with loss statistics."""

    training_id: str
    map_id: int | None
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
    """Evaluate a checkpoint (training run `checkpoint`'s newest, or the one so named) over `episodes` games."""

    map_id: MapId | None = None
    checkpoint: CheckpointChoice
    episodes: Episodes
    action_combinations: ActionCombinations | None = None
    params: Params = {}
    workload: Workload = "2048"
    strict_params: StrictParams = True


class TestingStarted(Reply, kw_only=True):
    """An evaluation run was queued; `test_id` (and `task_id`) is its job id, `state` where it stands."""

    test_id: str
    status: Literal["started"]
    map_id: int | None
    checkpoint: str
    episodes: int
    started_at: datetime
    task_id: str
    state: RunStatus
    workload: str


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


class TestingStatus(Reply, kw_only=True):
    """An evaluation run's status, progress and newest episode."""

    test_id: str
    status: RunStatus
    map_id: int | None
    map_name: str | None
    checkpoint: str | None
    progress: TestingProgress
    latest_episode: EpisodeRow | None
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
    """Every episode of an evaluation run, in episode order, with its events; statistics of each figure
    and the rates the workload reported (`reached_2048` for 2048)."""

    test_id: str
    map_id: int | None
    map_name: str | None
    checkpoint: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: Seconds | None
    episodes: list[EpisodeRow]
    aggregate_metrics: dict[str, Stats | float]
    status: RunStatus
    result: dict[str, Any] | None


class TimelinePoint(Reply, kw_only=True):
    """The episode's main figure (`figure`: the score for 2048) after one frame."""

    frame: int
    timestamp: datetime
    value: float


class EpisodeLog(Reply, kw_only=True):
    """One episode frame by frame: its events (a move each for 2048) and the main figure over time."""

    test_id: str
    episode_num: int
    duration_seconds: Seconds | None
    frames: int
    events: list[dict[str, Any]]
    figure: str
    timeline: list[TimelinePoint]
    episode: int
    score: float
    figures: dict[str, float]
    timestamp: datetime
    log: list[dict[str, Any]]
