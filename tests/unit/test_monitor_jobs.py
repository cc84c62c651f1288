"""The monitor's rules on jobs: GPUs idle or unused by a job that asked for them, per-job stall periods,
when a stalled job that chose a restart is due one, and a job's facts folded from its events."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts import events as ev
from contracts.telemetry import GpuFigures
from services.monitor import domain, jobwatch
from services.monitor.domain import DEFAULT_RULES, JobOnHost
from tests.unit.test_monitor_domain import T0, ids, kinds, sample

IDLE = next(r for r in DEFAULT_RULES if r.name == "gpu_idle")
ON_CPU = next(r for r in DEFAULT_RULES if r.name == "job_on_cpu")


def gpu(index: int = 0, util: float | None = 90.0, processes: tuple[int, ...] | None = (7,)) -> GpuFigures:
    return GpuFigures(index=index, utilization_percent=util, processes=processes)


def job(gpus: int = 1, indices: tuple[int, ...] = (0,), pid: int | None = 7) -> JobOnHost:
    return JobOnHost(job_id="j1", gpus=gpus, gpu_indices=indices, pid=pid)


@pytest.mark.parametrize(("metric", "gpus", "on", "expected"), [
    ("job_gpu_utilization_percent", (gpu(0, 3.0), gpu(1, 99.0)), job(), 3.0),  # only its own GPU counts
    ("job_gpu_utilization_percent", (gpu(0, 3.0),), job(gpus=0), None),  # asked for no GPU
    ("job_gpu_utilization_percent", (), job(), None),  # no GPU figures on the host (no NVML)
    ("job_gpu_utilization_percent", (gpu(0, None),), job(), None),
    ("job_on_cpu", (gpu(0, processes=(7,)),), job(), 0.0),  # its process is on its GPU
    ("job_on_cpu", (gpu(0, processes=(8,)),), job(), 1.0),  # it is not: it computes on the CPU
    ("job_on_cpu", (gpu(0),), job(indices=()), 1.0),  # asked for a GPU and was given none
    ("job_on_cpu", (gpu(0, processes=None),), job(), None),  # NVML cannot say which process runs where
    ("job_on_cpu", (gpu(0, processes=(8,)),), job(pid=None), None),  # its worker did not say its pid
    ("job_on_cpu", (), job(), None),
])
def test_a_jobs_gpu_figures(metric, gpus, on, expected) -> None:
    assert domain.job_reading(metric, sample(gpus=gpus), on) == expected


def run_job(values: list[tuple[float, tuple[GpuFigures, ...]]], rule, on: JobOnHost = job()):
    board, watch, new_id, out = domain.initial_state(), domain.Watch(), ids(), []
    for seconds, gpus in values:
        step = domain.decide_sample(board, watch, sample(gpus=gpus), [rule], T0 + timedelta(seconds=seconds),
                                    new_id, [on])
        for event in step.events:
            board = domain.evolve(board, event)
        watch, out = step.watch, out + step.events
    return out, board


@pytest.mark.parametrize(("values", "expected"), [
    ([(0, (gpu(util=1.0),)), (599, (gpu(util=1.0),))], []),  # idle, but not for 10 min yet
    ([(0, (gpu(util=1.0),)), (600, (gpu(util=2.0),))], ["AlertRaised"]),
    ([(0, (gpu(util=1.0),)), (300, (gpu(util=50.0),)), (600, (gpu(util=1.0),))], []),  # busy between: pending again
    ([(0, (gpu(util=1.0),)), (600, (gpu(util=1.0),)), (700, (gpu(util=10.0),))], ["AlertRaised"]),  # below clear
    ([(0, (gpu(util=1.0),)), (600, (gpu(util=1.0),)), (700, (gpu(util=30.0),))], ["AlertRaised", "AlertResolved"]),
    ([(0, ()), (600, ()), (1200, ())], []),  # no GPU figures: nothing to decide, never a recovery
])
def test_a_job_whose_gpu_stays_idle(values, expected) -> None:
    events, _ = run_job(values, IDLE)
    assert kinds(events) == expected


def test_a_job_that_asked_for_a_gpu_but_runs_on_the_cpu_is_raised_on_the_job() -> None:
    cpu_only = (gpu(processes=(99,)),)
    events, board = run_job([(0, cpu_only), (60, cpu_only), (120, cpu_only)], ON_CPU)
    assert kinds(events) == ["AlertRaised"]
    raised = events[0]
    assert (raised.rule, raised.target_kind, raised.target, raised.value) == ("job_on_cpu", "job", "j1", 1.0)
    assert "job j1 on h1" in raised.message
    events, _ = run_job([(0, cpu_only), (120, cpu_only), (130, (gpu(processes=(7, 99)),))], ON_CPU)
    assert kinds(events) == ["AlertRaised", "AlertResolved"]
    # The job ends: its alert ends with it, as a stall does.
    ended = domain.decide_stalls(board, {}, {}, T0 + timedelta(seconds=200), 600.0, ids())
    assert [(e.alert_id, e.reason) for e in ended] == [(raised.alert_id, "job_ended")]


def test_each_job_stalls_after_its_own_period() -> None:
    running = jobwatch.track_running({}, "w1", ["j1", "j2"], T0)
    at = T0 + timedelta(seconds=120)
    stalled = domain.decide_stalls(domain.initial_state(), running, {}, at, 600.0, ids(), {"j2": 100.0})
    assert [(e.job_id, e.stall_after_s) for e in stalled] == [("j2", 100.0)]


def facts(on_stall: str = "restart", stall_after_s: float | None = 60.0) -> dict[str, jobwatch.JobFacts]:
    return {"j1": jobwatch.JobFacts(job_id="j1", on_stall=on_stall, stall_after_s=stall_after_s)}


def stalled_board() -> domain.AlertBoard:
    stall = ev.JobStalled(alert_id="a1", job_id="j1", worker_id="w1", stall_after_s=60.0, raised_at=T0)
    return domain.evolve(domain.initial_state(), stall)


@pytest.mark.parametrize(("seconds", "known", "asked", "due"), [
    (59, facts(), {}, False),  # the second period has not passed
    (60, facts(), {}, True),
    (60, facts(on_stall="alert"), {}, False),  # the default: only alert
    (60, {}, {}, False),  # nothing known of the job: never restart blind
    (600, facts(stall_after_s=None), {}, True),  # the [monitor] period (600 s) is the job's
    (599, facts(stall_after_s=None), {}, False),
    (100, facts(), {"a1": T0 + timedelta(seconds=60)}, False),  # asked (refused) 40 s ago: not again yet
    (120, facts(), {"a1": T0 + timedelta(seconds=60)}, True),
])
def test_a_stalled_job_that_chose_a_restart_is_due_one_a_period_later(seconds, known, asked, due) -> None:
    running = jobwatch.track_running({}, "w1", ["j1"], T0 - timedelta(seconds=60))
    out = jobwatch.due_restarts(stalled_board(), running, known, T0 + timedelta(seconds=seconds), 600.0, asked)
    assert [a.alert_id for a in out] == (["a1"] if due else [])


def test_a_jobs_facts_come_from_its_submission_and_latest_assignment() -> None:
    events = [ev.JobSubmitted(job_id="j1", kind="train", workload="w", gpus=2, stall_after_s=30.0,
                              on_stall="restart", submitted_at=T0),
              ev.JobAssigned(job_id="j1", attempt=1, worker_id="w1", gpu_indices=(0, 1), assigned_at=T0),
              ev.JobRequeued(job_id="j1", attempt=2, reason="stalled", requeued_at=T0),
              ev.JobAssigned(job_id="j1", attempt=2, worker_id="w2", gpu_indices=(3, 4), assigned_at=T0)]
    assert jobwatch.job_facts("j1", events) == jobwatch.JobFacts(
        job_id="j1", gpus=2, stall_after_s=30.0, on_stall="restart", attempt=2, worker_id="w2", gpu_indices=(3, 4))
    assert jobwatch.job_facts("j1", events[1:]) is None
    running = jobwatch.track_running({}, "w2", ["j1"], T0)
    on = jobwatch.jobs_on("w2", running, {"j1": jobwatch.job_facts("j1", events)}, {"j1": 42})
    assert on == [JobOnHost(job_id="j1", gpus=2, gpu_indices=(3, 4), pid=42)]
    assert jobwatch.jobs_on("w1", running, {}, {}) == []
