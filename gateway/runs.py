"""Training and evaluation views computed from a job and its telemetry: pure functions, no I/O."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from contracts.telemetry import EpisodeReport, JobProgress
from gateway.schemas.jobs import JobView
from gateway.schemas.runs import (
    EpisodeLog,
    EpisodeRow,
    IterationLoss,
    LatestMetrics,
    RunStatus,
    Stats,
    TestingProgress,
    TimelinePoint,
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
    return LatestMetrics(iteration=last.iteration, dqn_loss=last.loss, timestamp=last.at, loss=last.loss,
                         metrics=dict(last.metrics))


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
        training_id=job.id, map_id=job.map_id, max_iterations=job.max_iterations,
        final_iteration=rows[-1].iteration if rows else 0,
        started_at=job.started_at, completed_at=job.finished_at, duration_seconds=duration,
        iterations=[IterationLoss(iteration=s.iteration, dqn_loss=s.loss, timestamp=s.at, loss=s.loss) for s in rows],
        max_loss=max(losses) if losses else None, min_loss=min(losses) if losses else None,
        mean_loss=statistics.fmean(losses) if losses else None, final_loss=losses[-1] if losses else None)


def by_episode(reports: Iterable[EpisodeReport]) -> list[EpisodeReport]:
    """One report per episode number (the newest wins), in order."""
    latest: dict[int, EpisodeReport] = {}
    for report in reports:
        latest[report.episode] = report
    return [latest[e] for e in sorted(latest)]


DURATION = "duration_s"  # the figure a workload reports an episode's length in (2048-eval does)
NOT_EVENTS = ("move",)  # log entries of these types are frames, not events worth listing in results
SPEC_KEYS = ("episode_num", "duration_seconds", "timestamp", "events")


def episode_row(report: EpisodeReport) -> EpisodeRow:
    """An episode as the earlier API shows it: figures flat beside `episode_num`, without its frames."""
    figures = {k: v for k, v in report.figures.items() if k not in SPEC_KEYS}
    return {"episode_num": report.episode, **figures, "score": report.score,
            "duration_seconds": report.figures.get(DURATION), "timestamp": report.at,
            "episode": report.episode, "figures": dict(report.figures), "moves_logged": len(report.log)}


def frame_events(report: EpisodeReport) -> list[dict[str, Any]]:
    """Every logged frame as an event: `frame` (the move number), `timestamp` (from the entry's `t`,
    seconds into the episode, when the workload logs it; else the episode's end), `type` ("move" unless
    the entry names one) and the entry's own fields."""
    duration = report.figures.get(DURATION)
    begun = report.at - timedelta(seconds=duration) if duration is not None else None
    events = []
    for number, entry in enumerate(report.log, 1):
        offset = entry.get("t")
        when = begun + timedelta(seconds=float(offset)) if begun and isinstance(offset, int | float) else report.at
        frame = entry.get("move", entry.get("frame", number))
        events.append({**entry, "frame": frame if isinstance(frame, int) else number, "timestamp": when,
                       "type": str(entry.get("type", "move"))})
    return events


def notable_events(report: EpisodeReport) -> list[dict[str, Any]]:
    """The events a result lists: the workload's typed log entries that are not plain moves, and the end."""
    frames = frame_events(report)
    listed = [e for e in frames if e["type"] not in NOT_EVENTS]
    end = {"frame": frames[-1]["frame"] if frames else 0, "timestamp": report.at, "type": "episode_end",
           "score": report.score}
    return [*listed, end]


def episode_with_events(report: EpisodeReport) -> EpisodeRow:
    """An episode of the results: its row and its notable events."""
    return {**episode_row(report), "events": notable_events(report)}


def episode_log(test_id: str, report: EpisodeReport) -> EpisodeLog:
    """One episode frame by frame, with the score after each frame."""
    events = frame_events(report)
    timeline = [TimelinePoint(frame=e["frame"], timestamp=e["timestamp"], value=float(e["score"]))
                for e in events if isinstance(e.get("score"), int | float)]
    return EpisodeLog(test_id=test_id, episode_num=report.episode, duration_seconds=report.figures.get(DURATION),
                      frames=len(events), events=events, figure="score", timeline=timeline, episode=report.episode,
                      score=report.score, figures=dict(report.figures), timestamp=report.at, log=report.log)


def testing_progress(job: JobView, done: int, now: datetime) -> TestingProgress:
    """Episodes done of the episodes asked for, elapsed time and a linear estimate of the rest."""
    percent, elapsed, remaining = _progress(job, done, job.episodes, now)
    return TestingProgress(current_episode=done, total_episodes=job.episodes, progress_percent=percent,
                           elapsed_seconds=elapsed, estimated_remaining_seconds=remaining)


def describe(values: Sequence[float]) -> Stats:
    """min/max/mean/median/std (population) of a non-empty list."""
    return Stats(min=float(min(values)), max=float(max(values)), mean=statistics.fmean(values),
                 median=float(statistics.median(values)), std=statistics.pstdev(values))


def aggregate_episodes(episodes: Sequence[EpisodeReport], result: dict[str, Any] | None) -> dict[str, Stats | float]:
    """Statistics of score and every other figure (from the job's result when the episodes aged out),
    and the rates the result reports (its other numbers, such as `reached_2048`)."""
    out: dict[str, Stats | float] = {}
    if episodes:
        names = sorted({name for e in episodes for name in e.figures} - {"score"})
        out["score"] = describe([e.score for e in episodes])
        for name in names:
            out[name] = describe([e.figures[name] for e in episodes if name in e.figures])
    for name, value in (result or {}).items():
        if isinstance(value, dict) and {"min", "max", "mean", "median", "std"} <= value.keys() and not episodes:
            out[name] = Stats(**{k: float(value[k]) for k in ("min", "max", "mean", "median", "std")})
        elif isinstance(value, int | float) and not isinstance(value, bool) and name != "episodes":
            out.setdefault(name, float(value))
    return out
