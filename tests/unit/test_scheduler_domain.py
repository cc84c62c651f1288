"""The scheduler's decider, table by table: submit, stop, reports (with fencing), worker events, time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from contracts import events as ev
from contracts.commands import ReportJobCheckpointed, ReportJobFinished, ReportJobStarted, StopJob, SubmitJob
from contracts.dispatch import Assignment, StopAttempt
from contracts.errors import Conflict, InvalidCommand, NotFound, UnknownWorkload
from services.scheduler import board as board_module
from services.scheduler import domain
from services.scheduler.board import JobBoard, apply_in_place, initial_state

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SHA = "b" * 64


def fold(*events: ev.Event) -> JobBoard:
    """A board from events, the way the log builds it."""
    state = initial_state()
    for event in events:
        apply_in_place(state, event)
    return state


def worker(worker_id: str = "w1", slots: int = 1, gpus: int = 0, labels=("training", "evaluation"), *,
           workloads: tuple[str, ...] | None = None, target_modules: tuple[str, ...] | None = None,
           draining: bool = False):
    caps = ev.WorkerCapabilities(hostname=worker_id, cpu_cores=4, ram_mb=1024, slots=slots, labels=labels,
                                 gpus=tuple(ev.Gpu(index=i, name="g", memory_mb=1) for i in range(gpus)),
                                 workloads=workloads, target_modules=target_modules)
    return ev.WorkerRegistered(worker_id=worker_id, capabilities=caps, registered_at=T0, draining=draining)


def submitted(job_id: str = "j1", **fields) -> ev.JobSubmitted:
    return ev.JobSubmitted(job_id=job_id, kind=fields.pop("kind", "train"), workload=fields.pop("workload", "noop"),
                           submitted_at=T0, **fields)


def assigned(job_id: str = "j1", worker_id: str = "w1", attempt: int = 1, slot: int = 0) -> ev.JobAssigned:
    return ev.JobAssigned(job_id=job_id, attempt=attempt, worker_id=worker_id, slot=slot, assigned_at=T0)


def started(job_id: str = "j1", worker_id: str = "w1", attempt: int = 1) -> ev.JobStarted:
    return ev.JobStarted(job_id=job_id, attempt=attempt, worker_id=worker_id, started_at=T0)


def checkpointed(job_id: str = "j1", iteration: int = 5, name: str = "c5") -> ev.JobCheckpointed:
    return ev.JobCheckpointed(job_id=job_id, attempt=1, iteration=iteration, name=name, sha256=SHA, size=1,
                              checkpointed_at=T0)


def decide(command, state: JobBoard, now: datetime = T0, **kw):
    return domain.decide(command, state, now, new_job_id=lambda: "new", **kw)


def finished(outcome: str, attempt: int = 1, worker_id: str = "w1", **fields) -> ReportJobFinished:
    return ReportJobFinished(job_id="j1", attempt=attempt, worker_id=worker_id, outcome=outcome, **fields)


RUNNING = (worker(), submitted(), assigned(), started())


# -- submit ----------------------------------------------------------------------------------------

def test_submit_without_a_free_slot_only_queues() -> None:
    events = decide(SubmitJob(workload="noop", max_iterations=3, priority=2), initial_state())
    assert [type(e) for e in events] == [ev.JobSubmitted]
    assert events[0].job_id == "new" and events[0].priority == 2 and events[0].max_iterations == 3


def test_submit_with_a_free_slot_assigns_in_the_same_decision() -> None:
    events = decide(SubmitJob(workload="noop", gpus=1), fold(worker(slots=2, gpus=2)))
    assert [type(e) for e in events] == [ev.JobSubmitted, ev.JobAssigned]
    assert (events[1].worker_id, events[1].slot, events[1].gpu_indices, events[1].attempt) == ("w1", 0, (0,), 1)


def test_submit_does_not_jump_a_queued_job_that_fits_first() -> None:
    # The queued job would take the only slot in a placement pass, so the new one waits behind it.
    state = fold(submitted("old"), worker())
    assert [type(e) for e in decide(SubmitJob(workload="noop"), state)] == [ev.JobSubmitted]


def test_same_idempotency_key_gives_no_new_job() -> None:
    state = fold(submitted("j1", idempotency_key="k"))
    assert decide(SubmitJob(workload="noop", idempotency_key="k"), state) == []
    assert state.idempotency == {"k": "j1"}


@pytest.mark.parametrize(("command", "message"), [
    (SubmitJob(workload="noop", kind="eval", episodes=3), "needs checkpoint_of"),
    (SubmitJob(workload="noop", kind="eval", checkpoint_of="nope"), "nope: no such job"),
    (SubmitJob(workload="noop", kind="eval", checkpoint_of="j1"), "has no checkpoint yet"),
])
def test_invalid_submissions_are_refused(command: SubmitJob, message: str) -> None:
    with pytest.raises(InvalidCommand, match=message):
        decide(command, fold(*RUNNING))


def test_an_evaluation_gets_the_checkpoints_of_a_finished_source_newest_first() -> None:
    done = ev.JobCompleted(job_id="j1", attempt=1, completed_at=T0)
    state = fold(*RUNNING, checkpointed(iteration=5, name="c5"), checkpointed(iteration=9, name="c9"), done)
    events = decide(SubmitJob(workload="noop", kind="eval", checkpoint_of="j1", episodes=2), state)
    assert [type(e) for e in events] == [ev.JobSubmitted, ev.JobAssigned]
    apply_in_place(state, events[0]), apply_in_place(state, events[1])
    message = domain.dispatch_for(state, events[1])
    assert isinstance(message, Assignment) and message.kind == "eval" and message.episodes == 2
    assert [c.name for c in message.checkpoints] == ["c9", "c5"]


OFFERS = ("2048", "2048-eval", "noop")


@pytest.mark.parametrize(("command", "workers"), [
    (SubmitJob(workload="noop"), (worker(workloads=OFFERS),)),
    (SubmitJob(workload="2048-eval"), (worker(workloads=OFFERS),)),
    (SubmitJob(workload="pkg.mod:run"), (worker(workloads=OFFERS),)),  # it accepts module:function targets
    (SubmitJob(workload="anything"), ()),  # no worker yet: it waits for one
    (SubmitJob(workload="anything"), (worker(workloads=OFFERS), worker("old"))),  # one that did not say
    (SubmitJob(workload="noop"), (worker(workloads=OFFERS), ev.WorkerDeregistered(worker_id="w1",
                                                                                  deregistered_at=T0))),
])
def test_a_workload_some_registered_worker_offers_is_accepted(command: SubmitJob, workers) -> None:
    assert type(decide(command, fold(*workers))[0]) is ev.JobSubmitted


def test_an_unknown_workload_is_refused_listing_what_is_offered() -> None:
    state = fold(worker(workloads=OFFERS), worker("w2", workloads=("sleep",), target_modules=()),
                 ev.WorkerLost(worker_id="w2", last_seen=T0, lost_at=T0))
    with pytest.raises(UnknownWorkload) as refused:
        decide(SubmitJob(workload="nosuch"), state)
    assert refused.value.code == 400
    assert "unknown workload 'nosuch'" in refused.value.message
    assert "offered: 2048, 2048-eval, noop, sleep; module:function targets: from any module" in refused.value.message
    only_mine = fold(worker(workloads=OFFERS, target_modules=("mine",)), worker("w2", workloads=(), target_modules=()))
    assert decide(SubmitJob(workload="mine.train:run"), only_mine)  # it has that module
    with pytest.raises(UnknownWorkload, match=r"workloads such as 'pkg:run'.*module:function targets: from mine\)"):
        decide(SubmitJob(workload="pkg:run"), only_mine)
    with pytest.raises(UnknownWorkload, match=r"module:function targets: none"):
        decide(SubmitJob(workload="pkg:run"), fold(worker(workloads=OFFERS, target_modules=())))


def test_an_evaluation_of_x_needs_a_worker_with_x_eval_or_x() -> None:
    source = (submitted("src"), checkpointed("src"))
    evaluate = SubmitJob(kind="eval", workload="2048", episodes=3, checkpoint_of="src")
    assert decide(evaluate, fold(*source, worker(workloads=("2048-eval",))))[0].workload == "2048"
    assert decide(msgspec.structs.replace(evaluate, workload="noop"), fold(*source, worker(workloads=("noop",))))
    with pytest.raises(UnknownWorkload, match=r"'2048'.*nor '2048-eval'"):
        decide(evaluate, fold(*source, worker(workloads=("noop",))))


# -- stop ------------------------------------------------------------------------------------------

def test_stopping_a_queued_job_ends_it_at_once() -> None:
    events = decide(StopJob(job_id="j1"), fold(submitted()))
    assert [type(e) for e in events] == [ev.JobStopRequested, ev.JobStopped]


def test_stopping_a_running_job_asks_its_worker() -> None:
    state = fold(*RUNNING)
    events = decide(StopJob(job_id="j1", reason="enough"), state)
    assert [type(e) for e in events] == [ev.JobStopRequested]
    apply_in_place(state, events[0])
    assert domain.dispatch_for(state, events[0]) == StopAttempt(job_id="j1", attempt=1, worker_id="w1",
                                                                 reason="enough")
    assert decide(StopJob(job_id="j1"), state) == []  # asking twice changes nothing


@pytest.mark.parametrize(("events", "error"), [
    ((), NotFound),
    ((*RUNNING, ev.JobCompleted(job_id="j1", attempt=1, completed_at=T0)), Conflict),
])
def test_stopping_an_unknown_or_finished_job_is_refused(events, error) -> None:
    with pytest.raises(error):
        decide(StopJob(job_id="j1"), fold(*events))


def test_stop_all_of_one_kind() -> None:
    state = fold(submitted("a"), submitted("b", kind="eval", checkpoint_of="a"), submitted("c"))
    events = decide(StopJob(kind="train"), state)
    assert [(type(e).__name__, e.job_id) for e in events] == [
        ("JobStopRequested", "a"), ("JobStopped", "a"), ("JobStopRequested", "c"), ("JobStopped", "c")]


# -- reports and fencing ---------------------------------------------------------------------------

@pytest.mark.parametrize(("before", "report", "expected"), [
    ((worker(), submitted(), assigned()), ReportJobStarted(job_id="j1", attempt=1, worker_id="w1"), [ev.JobStarted]),
    (RUNNING, ReportJobStarted(job_id="j1", attempt=1, worker_id="w1"), []),
    (RUNNING, finished("completed"), [ev.JobCompleted]),
    (RUNNING, finished("stopped"), [ev.JobStopped]),
    (RUNNING, finished("failed", error="boom"), [ev.JobFailed]),
    (RUNNING, finished("interrupted"), [ev.JobRequeued]),
    ((*RUNNING, ev.JobStopRequested(job_id="j1", requested_at=T0)), finished("interrupted"), [ev.JobStopped]),
    ((*RUNNING, ev.JobCompleted(job_id="j1", attempt=1, completed_at=T0)), finished("completed"), []),
    ((worker(), submitted(max_retries=2), assigned(), started(), ev.JobStopRequested(job_id="j1", requested_at=T0)),
     finished("failed", retryable=True, error="x"), [ev.JobFailed]),  # asked to stop: no retry
])
def test_report_table(before, report, expected) -> None:
    assert [type(e) for e in decide(report, fold(*before))] == expected


@pytest.mark.parametrize("report", [
    ReportJobStarted(job_id="j1", attempt=1, worker_id="w2"),  # another worker
    ReportJobStarted(job_id="j1", attempt=2, worker_id="w1"),  # an attempt that does not exist yet
    ReportJobStarted(job_id="zz", attempt=1, worker_id="w1"),  # an unknown job
])
def test_reports_from_the_wrong_worker_or_attempt_are_fenced(report) -> None:
    with pytest.raises(domain.StaleAttempt):
        decide(report, fold(*RUNNING))


START = ReportJobStarted(job_id="j1", attempt=1, worker_id="w1", resumed_from=4, corrupt_checkpoints=("c9",),
                         running_for_s=0.02)


def test_a_short_job_s_start_comes_with_its_end_and_both_are_recorded() -> None:
    assigned_at = T0 - timedelta(seconds=1)
    state = fold(worker(), submitted(), ev.JobAssigned(job_id="j1", attempt=1, worker_id="w1", assigned_at=assigned_at))
    events = decide(finished("completed", started=START), state)
    assert events == [ev.JobStarted(job_id="j1", attempt=1, worker_id="w1", resumed_from=4, corrupt_checkpoints=("c9",),
                                    started_at=T0 - timedelta(seconds=0.02)),
                      ev.JobCompleted(job_id="j1", attempt=1, completed_at=T0)]
    # Already running (its start was reported too, a retry of the end): only the end.
    assert [type(e) for e in decide(finished("completed", started=START), fold(*RUNNING))] == [ev.JobCompleted]
    # A failure that is retried: started, then the failure with its requeue.
    retried = fold(worker(), submitted(max_retries=1), assigned())
    events = decide(finished("failed", error="x", retryable=True, started=START), retried)
    assert [type(e) for e in events] == [ev.JobStarted, ev.JobFailed, ev.JobRequeued]
    assert [len(g) for g in domain.atomic_groups(events)] == [1, 2]


def test_a_start_is_never_dated_before_the_assignment_nor_after_now() -> None:
    state = fold(worker(), submitted(), ev.JobAssigned(job_id="j1", attempt=1, worker_id="w1", assigned_at=T0))
    long_ago = msgspec.structs.replace(START, running_for_s=86_400.0)  # a worker clock or a bug: clamped
    (event, _) = decide(finished("completed", started=long_ago), state, now=T0 + timedelta(seconds=5))
    assert event.started_at == T0


@pytest.mark.parametrize("start", [
    msgspec.structs.replace(START, attempt=2),
    msgspec.structs.replace(START, worker_id="w2"),
    msgspec.structs.replace(START, job_id="j2"),
])
def test_a_start_of_another_attempt_inside_an_end_is_refused(start) -> None:
    with pytest.raises(InvalidCommand, match="same job, attempt and worker"):
        decide(finished("completed", started=start), fold(worker(), submitted(), assigned()))


def test_after_a_worker_is_lost_its_attempt_is_fenced() -> None:
    state = fold(*RUNNING)
    lost = ev.WorkerLost(worker_id="w1", last_seen=T0, lost_at=T0)
    apply_in_place(state, lost)
    requeue = domain.on_worker_event(state, lost, T0)
    assert requeue == [ev.JobRequeued(job_id="j1", attempt=2, reason="worker_lost", requeued_at=T0)]
    apply_in_place(state, requeue[0])
    with pytest.raises(domain.StaleAttempt, match="attempt 1 on w1 is stale"):
        decide(finished("completed"), state)


def test_interrupted_attempt_is_requeued_with_the_next_attempt() -> None:
    assert decide(finished("interrupted"), fold(*RUNNING)) == [
        ev.JobRequeued(job_id="j1", attempt=2, reason="shutdown", requeued_at=T0)]


def test_an_attempt_cut_off_by_a_worker_crash_is_requeued_as_worker_lost() -> None:
    # The worker's next run reports what the crash cut off (before discovery noticed the silence).
    assert decide(finished("interrupted", crashed=True), fold(*RUNNING)) == [
        ev.JobRequeued(job_id="j1", attempt=2, reason="worker_lost", requeued_at=T0)]


def test_a_clean_shutdown_costs_one_attempt_and_never_reassigns_to_the_leaving_worker() -> None:
    # w1 says it is draining, its job ends interrupted and is requeued: nothing goes back to w1.
    state = fold(worker(slots=2), submitted(), assigned(), started(), worker(slots=2, draining=True))
    assert domain.tick(state, T0) == []  # a draining worker keeps the attempts it still runs
    events = decide(finished("interrupted"), state)
    assert events == [ev.JobRequeued(job_id="j1", attempt=2, reason="shutdown", requeued_at=T0)]
    apply_in_place(state, events[0])
    assert domain.assign(state, T0) == []
    assert [type(e) for e in decide(SubmitJob(workload="noop"), state)] == [ev.JobSubmitted]
    assert domain.on_worker_event(state, ev.WorkerDeregistered(worker_id="w1", deregistered_at=T0), T0) == []
    apply_in_place(state, worker("w2"))
    assert [(e.job_id, e.worker_id, e.attempt) for e in domain.assign(state, T0)] == [("j1", "w2", 2)]


def test_registering_again_ends_draining() -> None:
    state = fold(worker(draining=True), submitted())
    assert domain.assign(state, T0) == []
    apply_in_place(state, worker())
    assert [e.worker_id for e in domain.assign(state, T0)] == ["w1"]


def test_checkpoint_reports_are_recorded_once() -> None:
    report = ReportJobCheckpointed(job_id="j1", attempt=1, worker_id="w1", iteration=7, name="c7", sha256=SHA, size=3)
    state = fold(*RUNNING)
    events = decide(report, state)
    assert [type(e) for e in events] == [ev.JobCheckpointed] and events[0].iteration == 7
    apply_in_place(state, events[0])
    assert decide(report, state) == []


def test_retries_back_off_doubling_up_to_the_cap() -> None:
    policy = domain.RetryPolicy(base_s=1.0, max_s=3.0)
    state = fold(worker(), submitted(max_retries=3), assigned(), started())
    delays = []
    for attempt in (1, 2, 3):
        events = decide(finished("failed", attempt=attempt, retryable=True, error="x"), state, policy=policy)
        failed, requeued = events
        assert failed.will_retry and requeued.reason == "retry" and requeued.attempt == attempt + 1
        delays.append(requeued.not_before - T0)
        for e in (*events, assigned(attempt=attempt + 1), started(attempt=attempt + 1)):
            apply_in_place(state, e)
    assert delays == [timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=3)]
    last = decide(finished("failed", attempt=4, retryable=True, error="x"), state, policy=policy)
    assert [type(e) for e in last] == [ev.JobFailed] and not last[0].will_retry


def test_a_retry_waits_for_its_backoff_before_placement() -> None:
    state = fold(worker(), submitted(max_retries=1), assigned(), started())
    for e in decide(finished("failed", retryable=True, error="x"), state):
        apply_in_place(state, e)
    assert domain.assign(state, T0) == []
    placed = domain.assign(state, T0 + timedelta(seconds=1))
    assert [(e.job_id, e.attempt) for e in placed] == [("j1", 2)]


def test_non_retryable_failure_is_final() -> None:
    state = fold(worker(), submitted(max_retries=5), assigned(), started())
    events = decide(finished("failed", retryable=False, error="bad"), state)
    assert [type(e) for e in events] == [ev.JobFailed] and not events[0].will_retry
    apply_in_place(state, events[0])
    assert state.finished["j1"].status == "failed" and not state.running


def test_reply_tells_a_stopping_attempt_to_stop() -> None:
    state = fold(worker(), submitted(), assigned(), ev.JobStopRequested(job_id="j1", requested_at=T0, reason="r"))
    report = ReportJobStarted(job_id="j1", attempt=1, worker_id="w1")
    for e in decide(report, state):
        apply_in_place(state, e)
    assert domain.report_reply(report, state).stop is True


# -- worker events and time ------------------------------------------------------------------------

@pytest.mark.parametrize(("event", "expected"), [
    (ev.WorkerLost(worker_id="w1", last_seen=T0, lost_at=T0), ("JobRequeued", "worker_lost")),
    (ev.WorkerDeregistered(worker_id="w1", deregistered_at=T0), ("JobRequeued", "worker_left")),
    (ev.WorkerForgotten(worker_id="w1", forgotten_at=T0), ("JobRequeued", "worker_lost")),
    (ev.WorkerReturned(worker_id="w1", returned_at=T0), None),
    (ev.WorkerLost(worker_id="w2", last_seen=T0, lost_at=T0), None),
])
def test_worker_event_reactions(event, expected) -> None:
    out = domain.on_worker_event(fold(*RUNNING), event, T0)
    assert [(type(e).__name__, e.reason) for e in out] == ([expected] if expected else [])


def test_a_lost_worker_stopping_job_just_stops() -> None:
    state = fold(*RUNNING, ev.JobStopRequested(job_id="j1", requested_at=T0, reason="r"))
    out = domain.on_worker_event(state, ev.WorkerLost(worker_id="w1", last_seen=T0, lost_at=T0), T0)
    assert [type(e) for e in out] == [ev.JobStopped]


def test_timeout_ends_a_running_job_and_stops_its_attempt() -> None:
    state = fold(worker(), submitted(timeout_s=10), assigned(), started())
    assert domain.tick(state, T0 + timedelta(seconds=9)) == []
    events = domain.tick(state, T0 + timedelta(seconds=10))
    assert [type(e) for e in events] == [ev.JobTimedOut]
    apply_in_place(state, events[0])
    assert domain.dispatch_for(state, events[0]) == StopAttempt(job_id="j1", attempt=1, worker_id="w1",
                                                                 reason="timeout")
    with pytest.raises(domain.StaleAttempt):
        decide(finished("completed", worker_id="w2"), state)


def test_tick_requeues_attempts_left_on_a_lost_worker() -> None:
    # A leader that died between WorkerLost and the requeue leaves this for the next one.
    state = fold(*RUNNING, ev.WorkerLost(worker_id="w1", last_seen=T0, lost_at=T0))
    assert [(type(e).__name__, e.attempt) for e in domain.tick(state, T0)] == [("JobRequeued", 2)]


def test_unstarted_assignments_are_listed_for_republishing() -> None:
    state = fold(worker(slots=2), submitted("a"), assigned("a"), submitted("b"), assigned("b", slot=1), started("b"))
    assert [a.job_id for a in domain.unstarted_assignments(state)] == ["a"]


def test_finished_jobs_are_forgotten_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(board_module, "RETAIN_FINISHED", 2)
    state = initial_state()
    for job_id in ("a", "b", "c"):
        apply_in_place(state, submitted(job_id, idempotency_key=f"k{job_id}"))
        apply_in_place(state, ev.JobStopped(job_id=job_id, attempt=1, stopped_at=T0))
    assert list(state.finished) == ["b", "c"] and state.idempotency == {"kb": "b", "kc": "c"}
    assert not state.jobs and not state.queue


def test_a_retried_failure_goes_with_its_requeue_in_one_append() -> None:
    failed = ev.JobFailed(job_id="j1", attempt=1, error="x", will_retry=True, failed_at=T0)
    requeued = ev.JobRequeued(job_id="j1", attempt=2, reason="retry", requeued_at=T0)
    other = ev.JobSubmitted(job_id="j2", kind="train", workload="w", submitted_at=T0)
    assert domain.atomic_groups([other, failed, requeued, other]) == [[other], [failed, requeued], [other]]
