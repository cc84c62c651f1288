"""A job's telemetry subjects name the worker that sent them; readers believe only the job's workers."""

from __future__ import annotations

import pytest

from contracts import events as ev
from contracts.base import utcnow
from contracts.subjects import Topology
from eventstore.telemetry import assigned_workers, trusted_sample
from gateway.live import Assignments, feeds_runs, subject_topics, telemetry_topics

T = Topology("stoker")


def test_job_subjects_name_the_job_and_the_worker() -> None:
    assert T.job_telemetry("progress", "J", "W") == "stoker.telemetry.progress.J.W"
    assert T.job_telemetry("episode", "J") == "stoker.telemetry.episode.J.*"
    assert T.job_telemetry("progress") == "stoker.telemetry.progress.*.*"
    assert T.parse_job_telemetry("stoker.telemetry.progress.J.W") == ("progress", "J", "W")
    assert T.parse_job_telemetry("stoker.telemetry.episode.J") == ("episode", "J", None)  # stored before
    for other in ("stoker.telemetry.heartbeat.W", "other.telemetry.progress.J.W", "stoker.telemetry.progress.J.W.x",
                  "stoker.events.job.J"):
        assert T.parse_job_telemetry(other) is None
    with pytest.raises(ValueError, match="not a job telemetry kind"):
        T.job_telemetry("heartbeat", "J", "W")


def test_a_sample_is_believed_only_from_a_worker_the_job_was_assigned_to() -> None:
    assert trusted_sample("w1", ["w1"]) and trusted_sample("w2", ("w1", "w2"))
    assert not trusted_sample("rogue", ["w1"]) and not trusted_sample("w1", [])
    assert trusted_sample(None, [])  # the old subject: only admin may publish there since; history


def test_the_workers_of_a_job_are_those_its_assignments_named() -> None:
    now = utcnow()
    events = [ev.JobSubmitted(job_id="J", kind="train", workload="noop", submitted_at=now),
              ev.JobAssigned(job_id="J", attempt=1, worker_id="a", assigned_at=now),
              ev.JobStarted(job_id="J", attempt=1, worker_id="b", started_at=now),  # not an assignment
              ev.JobRequeued(job_id="J", attempt=2, reason="worker_lost", requeued_at=now),
              ev.JobAssigned(job_id="J", attempt=2, worker_id="c", assigned_at=now),
              ev.JobAssigned(job_id="J", attempt=3, worker_id="a", assigned_at=now)]
    assert assigned_workers(events) == ["c", "a"]  # the latest assigned last


def test_the_feed_believes_a_jobs_sample_only_from_its_workers() -> None:
    known = Assignments(size=2)
    known.note("J", ["w1"])
    assert known.believes(T, T.job_telemetry("progress", "J", "w1"))
    assert not known.believes(T, T.job_telemetry("progress", "J", "rogue"))
    assert not known.believes(T, T.job_telemetry("episode", "K", "w1"))  # a job it does not know
    assert known.believes(T, T.telemetry("heartbeat", "w9"))  # not a job's sample
    # A worker not known on its job: the job's events are read once (then it is on the job, or never was).
    assert known.must_ask(T, T.job_telemetry("progress", "J", "rogue")) == "J"
    assert known.must_ask(T, T.job_telemetry("progress", "J", "w1")) is None
    assert known.must_ask(T, T.telemetry("progress", "J")) is None  # history is not asked about
    known.asked("J", "rogue")
    assert known.must_ask(T, T.job_telemetry("progress", "J", "rogue")) is None
    assert not known.believes(T, T.job_telemetry("progress", "J", "rogue"))
    known.note("K", [])
    known.note("L", ["w2"])  # the oldest (J) is forgotten
    assert not known.knows("J") and known.knows("K") and known.knows("L")


def test_the_feed_routes_job_samples_by_their_job() -> None:
    subject = T.job_telemetry("progress", "J", "w1")
    assert subject_topics(T, "telemetry", subject) == telemetry_topics("progress", "J") == ("job:J", "progress")
    assert subject_topics(T, "telemetry", T.job_telemetry("episode", "J", "w1")) == ("job:J",)
    assert feeds_runs(T, "telemetry", subject) == "progress"
    assert subject_topics(T, "telemetry", T.telemetry("heartbeat", "w1")) == ("workers",)
    assert subject_topics(T, "telemetry", T.telemetry("progress", "J")) == ()  # not live: history only
