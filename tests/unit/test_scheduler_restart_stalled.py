"""The scheduler's side of a stalled job: the monitor's `RestartStalledJob` requeues the current attempt only."""

from __future__ import annotations

import msgspec
import pytest

from contracts import events as ev
from contracts.commands import RestartStalledJob, SubmitJob
from contracts.dispatch import StopAttempt
from contracts.errors import Conflict, NotFound
from gateway.schemas.jobs import SubmitJobBody
from services.scheduler import domain
from tests.unit.test_scheduler_domain import T0, assigned, checkpointed, decide, fold, started, submitted, worker


def restart(job_id: str = "j1", attempt: int = 1, worker_id: str = "w1") -> RestartStalledJob:
    return RestartStalledJob(job_id=job_id, attempt=attempt, worker_id=worker_id, alert_id="a1")


RUNNING = (worker(), submitted(on_stall="restart"), assigned(), started(), checkpointed())


def test_a_stalled_running_attempt_is_requeued_and_resumes_from_its_checkpoint() -> None:
    state = fold(*RUNNING)
    events = decide(restart(), state)
    assert events == [ev.JobRequeued(job_id="j1", attempt=2, reason="stalled", requeued_at=T0)]
    state = fold(*RUNNING, *events, assigned(attempt=2))
    assignment = domain.dispatch_for(state, assigned(attempt=2))
    assert assignment.attempt == 2 and [c.name for c in assignment.checkpoints] == ["c5"]
    assert domain.stalled_stop(restart()) == StopAttempt(job_id="j1", attempt=1, worker_id="w1", reason="stalled")


@pytest.mark.parametrize(("events", "command", "error", "says"), [
    ((), restart(), NotFound, "no job"),
    ((worker(), submitted(on_stall="restart")), restart(), Conflict, "queued"),  # never started
    (RUNNING, restart(attempt=2), Conflict, "not running"),  # another attempt runs now
    (RUNNING, restart(worker_id="w2"), Conflict, "not running"),
    ((worker(), submitted(), assigned(), started()), restart(), Conflict, "only alerted"),  # on_stall = alert
    ((*RUNNING, ev.JobStopRequested(job_id="j1", requested_at=T0)), restart(), Conflict, "being stopped"),
    ((*RUNNING, ev.JobCompleted(job_id="j1", attempt=1, completed_at=T0)), restart(), Conflict, "finished"),
])
def test_a_restart_of_anything_but_the_current_running_attempt_is_refused(events, command, error, says) -> None:
    with pytest.raises(error, match=says):
        decide(command, fold(*events))


@pytest.mark.parametrize(("fields", "ok"), [
    ({"stall_after_s": 900.0, "on_stall": "restart"}, True),
    ({}, True),  # the defaults: the [monitor] period, alert only
    ({"stall_after_s": 0}, False),
    ({"stall_after_s": 40 * 86400}, False),  # more than a month: a typo, not a period
    ({"on_stall": "reboot"}, False),
])
def test_a_submission_says_its_stall_period_and_what_a_stall_does(fields, ok) -> None:
    body = msgspec.json.encode({"workload": "sleep", **fields})
    for cls in (SubmitJob, SubmitJobBody):
        if ok:
            decoded = msgspec.json.decode(body, type=cls)
            assert (decoded.stall_after_s, decoded.on_stall) == (fields.get("stall_after_s"),
                                                                 fields.get("on_stall", "alert"))
        else:
            with pytest.raises(msgspec.ValidationError):
                msgspec.json.decode(body, type=cls)
