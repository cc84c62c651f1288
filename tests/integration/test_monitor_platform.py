"""The monitor among the real services, as processes on an authenticated NATS: a real job that stalls."""

from __future__ import annotations

from contracts import events as ev
from contracts.commands import JobsStopping, StopJob
from contracts.telemetry import HostSample
from eventstore.micro import call
from tests.integration import test_trainer_platform as shared
from tests.integration.test_monitor_service import last_sample, until_events
from tests.integration.test_trainer_platform import Platform, pytestmark, submit, wait_event  # noqa: F401

# The authenticated nats-server of the platform tests (their fixtures, shared by name): each process
# connects with its own credential, the monitor as the `monitor` role.
secured, nats_server, nc = shared.secured, shared.nats_server, shared.nc


async def test_a_real_sleep_job_stalls_between_slow_steps_and_its_progress_resolves_it(
        secured, nats_server, nc, topology, event_log, tmp_path) -> None:
    platform = Platform(nats_server, topology, tmp_path, secured.credentials)
    platform.start("scheduler", "services.scheduler")
    platform.start("discovery", "services.discovery")
    platform.start("monitor", "services.monitor", STOKER_MONITOR_STALL_AFTER_S="1", STOKER_MONITOR_TICK_S="0.2",
                   STOKER_MONITOR_INTERVAL_S="0.5", STOKER_MONITOR_HOST_ID="plane")
    try:
        await platform.worker("mw1")
        # Steps of 4 s each: quiet for longer than stall_after_s before every progress report.
        job_id = await submit(nc, topology, workload="sleep", max_iterations=4, params={"step_s": 4})
        await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, ev.JobCompleted))
        assert await last_sample(nc, topology, "host", "plane", HostSample) is not None

        def first_stall_resolved(events) -> bool:
            stalls = [e for e in events if isinstance(e, ev.JobStalled)]
            return bool(stalls) and any(isinstance(e, ev.AlertResolved) and e.alert_id == stalls[0].alert_id
                                        for e in events)

        events = await until_events(event_log, first_stall_resolved, "the sleep job stalled and went on")
    finally:
        platform.stop()
    stalled = next(e for e in events if isinstance(e, ev.JobStalled))
    assert (stalled.job_id, stalled.worker_id, stalled.stall_after_s) == (job_id, "mw1", 1.0)
    resolved = next(e for e in events if isinstance(e, ev.AlertResolved) and e.alert_id == stalled.alert_id)
    assert resolved.reason == "progress"  # the first stall is in a quiet step; the step's report ends it


async def test_a_stalled_job_that_chose_a_restart_is_restarted_by_the_scheduler_at_the_monitors_request(
        secured, nats_server, nc, topology, event_log, tmp_path) -> None:
    platform = Platform(nats_server, topology, tmp_path, secured.credentials)
    platform.start("scheduler", "services.scheduler")
    platform.start("discovery", "services.discovery")
    # The monitor's own period is long: the job's own one (1 s) is the one that counts.
    platform.start("monitor", "services.monitor", STOKER_MONITOR_TICK_S="0.2", STOKER_MONITOR_INTERVAL_S="0.5",
                   STOKER_MONITOR_HOST_ID="plane")
    try:
        await platform.worker("mw2")
        # Each step takes 30 s: the job is silent far longer than its stall period, twice.
        job_id = await submit(nc, topology, workload="sleep", max_iterations=2, params={"step_s": 30},
                              stall_after_s=1.0, on_stall="restart")
        requeued = await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, ev.JobRequeued))
        await wait_event(event_log, "job", job_id,
                         lambda s: isinstance(s.event, ev.JobStarted) and s.event.attempt == 2)

        def restarted(events) -> bool:
            return any(isinstance(e, ev.AlertResolved) and e.reason == "restarted" for e in events)

        events = await until_events(event_log, restarted, "the stall resolved by the restart")
        await call(nc, topology, StopJob(job_id=job_id), JobsStopping)
        await wait_event(event_log, "job", job_id, lambda s: isinstance(s.event, ev.JobStopped))
    finally:
        platform.stop()
    assert (requeued.event.reason, requeued.event.attempt) == ("stalled", 2)
    stalled = next(e for e in events if isinstance(e, ev.JobStalled))
    assert (stalled.job_id, stalled.worker_id, stalled.stall_after_s) == (job_id, "mw2", 1.0)
    resolved = next(e for e in events if isinstance(e, ev.AlertResolved) and e.alert_id == stalled.alert_id)
    assert resolved.reason == "restarted"
