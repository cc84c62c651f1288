"""The one job-status vocabulary: which statuses are final, and which events end a job in which."""

from __future__ import annotations

import msgspec
import pytest

from contracts import events as ev
from contracts.base import utcnow
from contracts.status import (
    FINAL_STATUSES,
    JOB_STATUSES,
    ON_WORKER_STATUSES,
    UNFINISHED_STATUSES,
    final_status,
    is_final,
)
from gateway.schemas.jobs import JobView
from services.scheduler.board import Finished

NOW = utcnow()


@pytest.mark.parametrize(("event", "status"), [
    (ev.JobCompleted(job_id="j", attempt=1, completed_at=NOW), "completed"),
    (ev.JobStopped(job_id="j", attempt=1, stopped_at=NOW), "stopped"),
    (ev.JobTimedOut(job_id="j", attempt=1, timed_out_at=NOW), "timed_out"),
    (ev.JobFailed(job_id="j", attempt=1, error="boom", failed_at=NOW), "failed"),
    (ev.JobFailed(job_id="j", attempt=1, error="boom", will_retry=True, failed_at=NOW), None),
    (ev.JobRequeued(job_id="j", attempt=2, reason="retry", requeued_at=NOW), None),
    (ev.JobStarted(job_id="j", attempt=1, worker_id="w", started_at=NOW), None),
    (ev.JobStopRequested(job_id="j", requested_at=NOW), None),
])
def test_which_events_end_a_job_and_in_which_status(event, status) -> None:
    assert final_status(event) == status
    assert status is None or is_final(status)


def test_statuses_split_into_unfinished_and_final() -> None:
    assert set(UNFINISHED_STATUSES) | set(FINAL_STATUSES) == set(JOB_STATUSES)
    assert not set(UNFINISHED_STATUSES) & set(FINAL_STATUSES)
    assert set(ON_WORKER_STATUSES) < set(UNFINISHED_STATUSES)
    assert [s for s in JOB_STATUSES if is_final(s)] == list(FINAL_STATUSES)


def test_the_api_and_the_scheduler_speak_the_same_statuses() -> None:
    assert literal_values(JobView, "status") == set(JOB_STATUSES)
    assert literal_values(Finished, "status") == set(FINAL_STATUSES)


def literal_values(cls: type, field: str) -> set[str]:
    (found,) = [f for f in msgspec.inspect.type_info(cls).fields if f.name == field]
    return set(found.type.values)
