"""The `runs` feed of /ws: training and evaluation runs in the earlier API's messages, no I/O.

`training_progress`, `testing_progress`, `training_completed` and `testing_completed` (and stoker's
own `training_ended`/`testing_ended` for a run that stopped, failed or timed out) are built from the
job events and the progress and episode samples. A sample does not say whether its job trains or
evaluates, so the feed remembers each run it has seen submitted (or was seeded with from the read
model): its kind, when it started and its newest progress. It keeps at most `size` runs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts import events as ev
from contracts.telemetry import EpisodeReport, JobProgress
from gateway.live import RUNS as RUNS  # the topic; a socket authenticated by header or `?token=` gets it unasked
from gateway.runs import DURATION, SPEC_KEYS, aggregate_episodes

Message = dict[str, Any]


@dataclass
class Run:
    """What the feed knows of one run."""

    kind: str
    started_at: datetime | None = None
    iteration: int | None = None
    loss: float | None = None
    episodes: int = 0


class RunFeed:
    """Job events and samples in, the earlier API's messages out."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.runs: OrderedDict[str, Run] = OrderedDict()

    def seed(self, rows: list[dict[str, Any]]) -> None:
        """Remember runs the read model shows unfinished (submitted before the feed was listening)."""
        for row in rows:
            started = row.get("started_at")
            self._remember(row["id"], Run(kind=row["kind"], started_at=datetime.fromisoformat(started)
                                          if isinstance(started, str) else started))

    def _remember(self, job_id: str, run: Run) -> None:
        self.runs[job_id] = run
        self.runs.move_to_end(job_id)
        while len(self.runs) > self.size:
            self.runs.popitem(last=False)

    def on_event(self, event: ev.Event) -> list[Message]:
        """A job event: remember what it says; a run that ended is announced."""
        if isinstance(event, ev.JobSubmitted):
            self._remember(event.job_id, Run(kind=event.kind))
            return []
        run = self.runs.get(getattr(event, "job_id", ""))
        if run is None:
            return []
        if isinstance(event, ev.JobStarted):
            run.started_at = run.started_at or event.started_at
            return []
        if isinstance(event, ev.JobCompleted):
            del self.runs[event.job_id]
            return [self._completed(event, run)]
        ended = {ev.JobStopped: "stopped", ev.JobFailed: "failed", ev.JobTimedOut: "failed"}.get(type(event))
        if ended is None:
            return []
        del self.runs[event.job_id]
        prefix, key = ("training", "training_id") if run.kind == "train" else ("testing", "test_id")
        return [{"type": f"{prefix}_ended", key: event.job_id, "status": ended,
                 "error": getattr(event, "error", None)}]

    def _completed(self, event: ev.JobCompleted, run: Run) -> Message:
        result = event.result
        duration = (event.completed_at - run.started_at).total_seconds() if run.started_at else None
        if run.kind == "train":
            final_iteration = result.get("iteration", run.iteration)
            final_loss = result.get("loss", run.loss)
            return {"type": "training_completed", "training_id": event.job_id,
                    "final_iteration": final_iteration if isinstance(final_iteration, int) else run.iteration,
                    "final_loss": final_loss if isinstance(final_loss, int | float) else run.loss,
                    "duration_seconds": duration, "timestamp": event.completed_at}
        episodes = result.get("episodes", run.episodes)
        return {"type": "testing_completed", "test_id": event.job_id,
                "episodes_completed": episodes if isinstance(episodes, int) else run.episodes,
                "aggregate_metrics": aggregate_episodes([], result), "duration_seconds": duration,
                "timestamp": event.completed_at}

    def on_progress(self, sample: JobProgress) -> list[Message]:
        """A training run's progress sample as `training_progress` (an evaluation's are not)."""
        run = self.runs.get(sample.job_id)
        if run is None or run.kind != "train":
            return []
        run.iteration, run.loss = sample.iteration, sample.loss if sample.loss is not None else run.loss
        return [{"type": "training_progress", "training_id": sample.job_id, "iteration": sample.iteration,
                 "dqn_loss": sample.loss, "timestamp": sample.at, "total": sample.total,
                 "metrics": dict(sample.metrics)}]

    def on_episode(self, report: EpisodeReport) -> list[Message]:
        """A finished evaluation episode as `testing_progress`, its figures flat (score, max_tile, moves, …)."""
        run = self.runs.get(report.job_id)
        if run is None or run.kind != "eval":
            return []
        run.episodes = max(run.episodes, report.episode)
        figures = {k: v for k, v in report.figures.items() if k not in SPEC_KEYS}
        return [{**figures, "type": "testing_progress", "test_id": report.job_id, "episode": report.episode,
                 "score": report.score, "duration_seconds": report.figures.get(DURATION), "timestamp": report.at}]
