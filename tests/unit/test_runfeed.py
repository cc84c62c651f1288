"""The /ws `runs` feed: job events and samples in, the earlier API's messages out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts import events as ev
from contracts.telemetry import EpisodeReport, JobProgress
from gateway.runfeed import RunFeed

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def progress(job: str, i: int, loss: float | None) -> JobProgress:
    return JobProgress(job_id=job, attempt=1, worker_id="w", iteration=i, total=10, loss=loss, at=T0)


def test_a_training_run_from_submission_to_completion() -> None:
    feed = RunFeed()
    assert feed.on_event(ev.JobSubmitted(job_id="t", kind="train", workload="2048", submitted_at=T0)) == []
    feed.on_event(ev.JobStarted(job_id="t", attempt=1, worker_id="w", started_at=T0))
    [sample] = feed.on_progress(progress("t", 3, 0.5))
    assert sample == {"type": "training_progress", "training_id": "t", "iteration": 3, "dqn_loss": 0.5,
                      "timestamp": T0, "total": 10, "metrics": {}}
    feed.on_progress(progress("t", 4, None))  # no loss this time: the last one stands
    [done] = feed.on_event(ev.JobCompleted(job_id="t", attempt=1, result={"resumed_from": None},
                                           completed_at=T0 + timedelta(seconds=8)))
    assert done == {"type": "training_completed", "training_id": "t", "final_iteration": 4, "final_loss": 0.5,
                    "duration_seconds": 8.0, "timestamp": T0 + timedelta(seconds=8)}
    assert feed.on_progress(progress("t", 5, 0.1)) == [] and "t" not in feed.runs  # forgotten once done


def test_an_evaluation_run_speaks_testing_and_ignores_its_progress_samples() -> None:
    feed = RunFeed()
    feed.seed([{"id": "e", "kind": "eval", "started_at": "2026-01-01T00:00:00Z"}])  # from the read model
    assert feed.on_progress(progress("e", 1, None)) == []
    report = EpisodeReport(job_id="e", attempt=1, episode=2, score=300.0, at=T0,
                           figures={"max_tile": 64.0, "moves": 120.0, "duration_s": 0.5, "type": 1.0})
    [episode] = feed.on_episode(report)
    assert episode == {"type": "testing_progress", "test_id": "e", "episode": 2, "score": 300.0, "max_tile": 64.0,
                       "moves": 120.0, "duration_s": 0.5, "duration_seconds": 0.5, "timestamp": T0}
    result = {"episodes": 2, "score": {"min": 1, "max": 3, "mean": 2, "median": 2, "std": 1}, "reached_2048": 0.0}
    [done] = feed.on_event(ev.JobCompleted(job_id="e", attempt=1, result=result, completed_at=T0))
    assert done["type"] == "testing_completed" and done["episodes_completed"] == 2
    assert done["aggregate_metrics"]["score"].max == 3.0 and done["aggregate_metrics"]["reached_2048"] == 0.0


def test_runs_it_never_saw_are_silent_and_ended_runs_say_how() -> None:
    feed = RunFeed(size=2)
    assert feed.on_progress(progress("unknown", 1, 0.1)) == []
    for job in ("a", "b", "c"):
        feed.on_event(ev.JobSubmitted(job_id=job, kind="train", workload="2048", submitted_at=T0))
    assert list(feed.runs) == ["b", "c"]  # bounded: the oldest goes
    assert feed.on_event(ev.JobStopped(job_id="b", attempt=1, stopped_at=T0)) == [
        {"type": "training_ended", "training_id": "b", "status": "stopped", "error": None}]
    [failed] = feed.on_event(ev.JobFailed(job_id="c", attempt=1, error="boom", failed_at=T0))
    assert failed["status"] == "failed" and failed["error"] == "boom"
