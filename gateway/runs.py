"""Training and evaluation views computed from a job and its telemetry: pure functions, no I/O."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from contracts.telemetry import EpisodeReport, JobProgress
from gateway.schemas.jobs import JobView
from gateway.schemas.runs import (
    EpisodeSummary,
    IterationLoss,
    LatestMetrics,
    RunStatus,
    Stats,
    TestingProgress,
    TrainingLogs,
    TrainingProgress,
)
from gateway.views import elapsed_between

RUN_STATUS: dict[str, RunStatus] = {
    "queued": "pending", "assigned": "pending", "running": "running", "stopping": "running",
    "completed": "completed", "stopped": "stopped", "failed": "failed", "timed_out": "failed",
}


def run_status(job_status: str) -> RunStatus:
    """A job status in the training/testing API's words."""
    return RUN_STATUS[job_status]


def _progress(job: JobView, done: int, total: int | None, now: datetime) -> tuple[float, float, float | None]:
    """(percent, elapsed seconds, estimated remaining seconds) of a run."""
    elapsed = elapsed_between(job.started_at, job.finished_at, now)
    if job.status == "completed":
        return 100.0, elapsed, 0.0
    percent = min(100.0, 100.0 * done / total) if total else 0.0
    remaining = None
    if job.finished_at is None and total and done > 0 and job.started_at is not None:
        remaining = max(0.0, elapsed * (total - done) / done)
    return round(percent, 3), elapsed, remaining


def training_progress(job: JobView, last: JobProgress | None, now: datetime) -> TrainingProgress:
    """Iterations done of max_iterations, elapsed time and a linear estimate of the rest."""
    done = last.iteration if last else 0
    total = job.max_iterations or (last.total if last else None)
    percent, elapsed, remaining = _progress(job, done, total, now)
    return TrainingProgress(current_iteration=done, max_iterations=total, progress_percent=percent,
                            elapsed_seconds=elapsed, estimated_remaining_seconds=remaining)


def latest_metrics(last: JobProgress | None) -> LatestMetrics | None:
    """The newest progress report."""
    if last is None:
        return None
    return LatestMetrics(iteration=last.iteration, loss=last.loss, timestamp=last.at, metrics=dict(last.metrics))


def by_iteration(samples: Iterable[JobProgress]) -> list[JobProgress]:
    """One sample per iteration (a resumed attempt repeats some: the newest report wins), in order."""
    latest: dict[int, JobProgress] = {}
    for sample in samples:
        latest[sample.iteration] = sample
    return [latest[i] for i in sorted(latest)]


def training_logs(job: JobView, samples: Sequence[JobProgress], now: datetime) -> TrainingLogs:
    """Every iteration's loss with max/min/mean/final."""
    rows = by_iteration(samples)
    losses = [s.loss for s in rows if s.loss is not None]
    duration = elapsed_between(job.started_at, job.finished_at, now) if job.started_at else None
    return TrainingLogs(
        training_id=job.id, max_iterations=job.max_iterations, final_iteration=rows[-1].iteration if rows else 0,
        started_at=job.started_at, completed_at=job.finished_at, duration_seconds=duration,
        iterations=[IterationLoss(iteration=s.iteration, loss=s.loss, timestamp=s.at) for s in rows],
        max_loss=max(losses) if losses else None, min_loss=min(losses) if losses else None,
        mean_loss=statistics.fmean(losses) if losses else None, final_loss=losses[-1] if losses else None)


def by_episode(reports: Iterable[EpisodeReport]) -> list[EpisodeReport]:
    """One report per episode number (the newest wins), in order."""
    latest: dict[int, EpisodeReport] = {}
    for report in reports:
        latest[report.episode] = report
    return [latest[e] for e in sorted(latest)]


def episode_summary(report: EpisodeReport) -> EpisodeSummary:
    """An episode without its move log."""
    return EpisodeSummary(episode=report.episode, score=report.score, figures=dict(report.figures),
                          moves_logged=len(report.log), timestamp=report.at)


def testing_progress(job: JobView, done: int, now: datetime) -> TestingProgress:
    """Episodes done of the episodes asked for, elapsed time and a linear estimate of the rest."""
    percent, elapsed, remaining = _progress(job, done, job.episodes, now)
    return TestingProgress(current_episode=done, total_episodes=job.episodes, progress_percent=percent,
                           elapsed_seconds=elapsed, estimated_remaining_seconds=remaining)


def describe(values: Sequence[float]) -> Stats:
    """min/max/mean/median/std (population) of a non-empty list."""
    return Stats(min=float(min(values)), max=float(max(values)), mean=statistics.fmean(values),
                 median=float(statistics.median(values)), std=statistics.pstdev(values))


def aggregate_episodes(episodes: Sequence[EpisodeSummary], result: dict[str, Any] | None) -> dict[str, Stats]:
    """Statistics of score and every other figure; from the job's result when the episodes aged out."""
    if episodes:
        names = sorted({name for e in episodes for name in e.figures} - {"score"})
        out = {"score": describe([e.score for e in episodes])}
        for name in names:
            values = [e.figures[name] for e in episodes if name in e.figures]
            out[name] = describe(values)
        return out
    out = {}
    for name, value in (result or {}).items():
        if isinstance(value, dict) and {"min", "max", "mean", "median", "std"} <= value.keys():
            out[name] = Stats(**{k: float(value[k]) for k in ("min", "max", "mean", "median", "std")})
    return out
