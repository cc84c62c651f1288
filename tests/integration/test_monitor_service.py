"""The monitor on a real nats-server: samples on telemetry, alerts raised and resolved in the log, silence,
stalled jobs (by hand and a real `sleep` job), takeover of open alerts, the real psutil sampler."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from contracts import events as ev
from contracts.base import utcnow
from contracts.telemetry import HostSample, JobProgress, WorkerHeartbeat
from eventstore.telemetry import last_sample, publish_sample
from services.monitor.adapter import MonitorService
from services.monitor.domain import Rule
from services.monitor.sampler import PsutilSampler
from services.monitor.settings import MonitorSettings
from tests.integration.fake_worker import InProcess, eventually

CPU = Rule(name="cpu_high", metric="cpu_percent", fire=80.0, clear=70.0)
FAST = MonitorSettings(host_id="h1", interval_s=0.05, tick_s=0.05, missing_after_s=0.6, stall_after_s=0.5,
                       lease_ttl_s=0.6, rules=(CPU,))


class ChosenValues:
    """A sampler that reports the CPU figure a test sets (thread-safe: the monitor samples in a thread)."""

    def __init__(self, host_id: str = "h1", cpu: float = 10.0) -> None:
        self.host_id, self._cpu, self._lock = host_id, cpu, threading.Lock()
        self.closed = False

    def set(self, cpu: float) -> None:
        with self._lock:
            self._cpu = cpu

    def sample(self, now: datetime) -> HostSample:
        with self._lock:
            return HostSample(host_id=self.host_id, cpu_percent=self._cpu, memory_percent=20.0, at=now)

    def close(self) -> None:
        self.closed = True


class Monitor(InProcess):
    """A MonitorService on this loop, with the sampler the test gives it."""

    def __init__(self, url, topology, settings, sampler, **kw) -> None:
        super().__init__(url, topology, lambda ctx, s: MonitorService(ctx, s, sampler), settings, "monitor", **kw)


async def alert_events(event_log) -> list[ev.Event]:
    subject = event_log.topology.events("alert", "*")
    if not await event_log.has_events(subject):
        return []
    out = []
    async for msg in event_log.read_raw(1, filter_subject=subject):
        stored = event_log.decode(msg)
        if stored is not None:
            out.append(stored.event)
    return out


async def until_events(event_log, check, what: str) -> list[ev.Event]:
    async def found():
        events = await alert_events(event_log)
        return events if check(events) else None

    return await eventually(found, what=what)


def names(events) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_a_high_cpu_is_raised_once_and_resolved_in_the_log(nats_server, nc, topology, event_log) -> None:
    sampler = ChosenValues(cpu=10.0)
    async with Monitor(nats_server.url, topology, FAST, sampler) as service:
        await eventually(lambda: service.published >= 3, what="samples published")
        sampler.set(95.0)
        await until_events(event_log, lambda e: "AlertRaised" in names(e), "cpu alert raised")
        sampler.set(75.0)  # above clear: stays open
        published = service.published
        await eventually(lambda: service.published >= published + 5, what="more samples")
        sampler.set(50.0)
        events = await until_events(event_log, lambda e: "AlertResolved" in names(e), "cpu alert resolved")
        sample = await last_sample(nc, topology, "host", "h1", HostSample)
    assert sampler.closed
    assert sample is not None and sample.host_id == "h1"
    raised, resolved = events
    assert (raised.rule, raised.target, raised.value, raised.threshold) == ("cpu_high", "h1", 95.0, 80.0)
    assert (resolved.alert_id, resolved.value, resolved.reason) == (raised.alert_id, 50.0, "recovered")


class Receiver:
    """A local HTTP server that records each POST body, answering 500 to the first `failures` of them."""

    def __init__(self, failures: int = 0) -> None:
        import http.server

        self.bodies: list[bytes] = []
        self.failures, self.posts = failures, 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                failing = receiver.failures > 0
                receiver.posts += 1
                receiver.failures -= 1
                if not failing:
                    receiver.bodies.append(body)
                self.send_response(500 if failing else 204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_alerts_go_out_by_webhook_retried_after_a_failure(nats_server, nc, topology, event_log) -> None:
    import json

    from services.monitor.webhooks import Webhook

    with Receiver(failures=1) as receiver:
        hooks = (Webhook(url=receiver.url, backoff_s=0.05), Webhook(url=receiver.url, format="slack",
                                                                   rules=("gpu_hot",)))
        sampler = ChosenValues(cpu=95.0)
        async with Monitor(nats_server.url, topology, msgspec.structs.replace(FAST, webhooks=hooks), sampler):
            await eventually(lambda: len(receiver.bodies) >= 1, what="the raised notice delivered")
            sampler.set(10.0)
            await eventually(lambda: len(receiver.bodies) >= 2, what="the resolved notice delivered")
        sent = [json.loads(b) for b in receiver.bodies]
    events = await alert_events(event_log)
    assert [(n["kind"], n["rule"], n["target"], n["alert_id"]) for n in sent] == [
        ("raised", "cpu_high", "h1", events[0].alert_id), ("resolved", "cpu_high", "h1", events[0].alert_id)]
    assert receiver.posts == 3  # the first POST failed and was tried again; the slack hook wanted none of them


async def test_a_silent_host_gets_its_own_alert_and_samples_end_it(nats_server, nc, topology, event_log) -> None:
    async with Monitor(nats_server.url, topology, FAST, ChosenValues()):
        far = HostSample(host_id="far-box", cpu_percent=95.0, memory_percent=1.0, at=utcnow())
        await publish_sample(nc, topology, "host", "far-box", far)
        events = await until_events(event_log, lambda e: "host_silent" in [getattr(x, "rule", "") for x in e],
                                    "far-box silent")
        assert [(x.rule, x.target) for x in events] == [("cpu_high", "far-box"), ("host_silent", "far-box")]
        await publish_sample(nc, topology, "host", "far-box", far)
        events = await until_events(event_log, lambda e: "AlertResolved" in names(e), "far-box back")
    # The CPU alert stayed open through the silence: no samples is not a recovery.
    assert [(type(x).__name__, getattr(x, "reason", None)) for x in events] == [
        ("AlertRaised", None), ("AlertRaised", None), ("AlertResolved", "data_back")]
    assert events[2].alert_id == events[1].alert_id


async def assign(event_log, job_id: str, worker_id: str) -> None:
    """A job in the log, assigned to `worker_id` (whose progress of it the monitor believes)."""
    await event_log.append("job", job_id, [
        ev.JobSubmitted(job_id=job_id, kind="train", workload="noop", max_iterations=10, submitted_at=utcnow()),
        ev.JobAssigned(job_id=job_id, attempt=1, worker_id=worker_id, assigned_at=utcnow())], 0)


async def publish_progress(nc, topology, job_id: str, worker_id: str, iteration: int = 1) -> None:
    """A progress sample of the job on `worker_id`'s subject."""
    sample = JobProgress(job_id=job_id, attempt=1, worker_id=worker_id, iteration=iteration, at=utcnow())
    await nc.publish(topology.job_telemetry("progress", job_id, worker_id), msgspec.json.encode(sample))


async def test_a_job_without_progress_stalls_and_progress_resolves_it(nats_server, nc, topology, event_log) -> None:
    await assign(event_log, "j1", "w1")
    async with Monitor(nats_server.url, topology, FAST, ChosenValues()) as service:
        beat = WorkerHeartbeat(worker_id="w1", running=("j1",), at=utcnow())
        await publish_sample(nc, topology, "heartbeat", "w1", beat)
        events = await until_events(event_log, lambda e: "JobStalled" in names(e), "j1 stalled")
        stalled = events[0]
        assert (stalled.job_id, stalled.worker_id, stalled.last_progress_at) == ("j1", "w1", None)
        await publish_sample(nc, topology, "heartbeat", "w1", beat)
        await eventually(lambda: "j1" in service.alerter.facts, what="j1's assignment read from its events")
        await publish_progress(nc, topology, "j1", "w1")
        events = await until_events(event_log, lambda e: "AlertResolved" in names(e), "j1 resolved")
        assert service.alerter is not None
    assert (events[1].alert_id, events[1].reason) == (stalled.alert_id, "progress")


async def test_progress_from_a_worker_the_job_is_not_on_does_not_count(nats_server, nc, topology, event_log) -> None:
    await assign(event_log, "j1", "w1")
    await assign(event_log, "j2", "w1")
    async with Monitor(nats_server.url, topology, FAST, ChosenValues()) as service:
        beat = WorkerHeartbeat(worker_id="w1", running=("j1", "j2"), at=utcnow())
        await publish_sample(nc, topology, "heartbeat", "w1", beat)
        await eventually(lambda: service.alerter is not None and {"j1", "j2"} <= service.alerter.facts.keys(),
                         what="both jobs' assignments read from their events")
        alerter = service.alerter
        await publish_progress(nc, topology, "j1", "rogue")  # an admitted worker forging w1's job's progress
        await publish_progress(nc, topology, "j2", "w1")  # after it on the same subscription: a marker
        await eventually(lambda: "j2" in alerter.progress, what="the marker sample handled")
        assert "j1" not in alerter.progress  # the forged sample was handled before it and not counted
        await publish_progress(nc, topology, "j1", "w1")
        await eventually(lambda: "j1" in alerter.progress, what="w1's own sample counts")


async def test_a_new_alerter_takes_over_the_open_alerts(nats_server, nc, topology, event_log) -> None:
    sampler = ChosenValues(cpu=95.0)
    async with Monitor(nats_server.url, topology, FAST, sampler):
        await until_events(event_log, lambda e: "AlertRaised" in names(e), "cpu alert raised")
    async with Monitor(nats_server.url, topology, FAST, sampler) as again:
        await eventually(lambda: again.alerter is not None and again.alerter.state.open, what="open alert folded")
        published = again.published
        await eventually(lambda: again.published >= published + 5, what="more samples")
        sampler.set(10.0)
        events = await until_events(event_log, lambda e: "AlertResolved" in names(e), "resolved after takeover")
    assert names(events) == ["AlertRaised", "AlertResolved"]  # still high after the takeover: not raised twice


async def test_a_sampling_monitor_publishes_and_decides_nothing(nats_server, nc, topology, event_log) -> None:
    settings = MonitorSettings(role="sample", host_id="w9", interval_s=0.05, rules=(CPU,))
    async with Monitor(nats_server.url, topology, settings, ChosenValues("w9", cpu=99.0)) as service:
        await eventually(lambda: service.published >= 5, what="samples published")
        assert service.alerter is None
    assert await last_sample(nc, topology, "host", "w9", HostSample) is not None
    assert await alert_events(event_log) == []


def test_the_real_sampler_reads_this_machine(tmp_path: Path) -> None:
    sampler = PsutilSampler("here", [tmp_path, tmp_path / "missing"])
    try:
        first, second = sampler.sample(utcnow()), sampler.sample(utcnow())
    finally:
        sampler.close()
    assert second.host_id == "here" and second.hostname
    assert 0.0 <= second.cpu_percent <= 100.0 and len(second.per_cpu) >= 1
    assert 0.0 < second.memory_percent < 100.0 and second.memory_available_bytes > 0
    assert [d.path for d in second.disks] == [str(tmp_path.resolve())]  # the missing folder is left out
    assert second.disks[0].total_bytes > second.disks[0].free_bytes > 0
    assert any(p.pid == __import__("os").getpid() for p in second.processes)
    assert all(p.rss_bytes > 0 and p.threads >= 1 for p in second.processes)
    assert second.network and first.at <= second.at


def test_gpu_figures_come_from_nvml_where_there_is_a_gpu() -> None:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed here (no GPU on this machine)")
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        pynvml.nvmlShutdown()
    except pynvml.NVMLError as exc:
        pytest.skip(f"NVML unavailable: {exc}")
    if count == 0:
        pytest.skip("NVML finds no GPU")
    sampler = PsutilSampler("gpu-host", [Path(".")])
    try:
        sample = sampler.sample(utcnow())
    finally:
        sampler.close()
    assert len(sample.gpus) == count and sample.gpu_note == ""
    gpu = sample.gpus[0]
    assert gpu.memory_total_bytes and gpu.memory_total_bytes >= (gpu.memory_used_bytes or 0)
    assert gpu.temperature_c is not None and 0 < gpu.temperature_c < 120
    assert gpu.sm_clock_mhz is not None and gpu.memory_clock_mhz is not None
    # The compute processes are what `job_on_cpu` looks for a job's pid in: a tuple of pids where NVML says.
    assert gpu.processes is None or all(isinstance(pid, int) for pid in gpu.processes)


def test_without_nvml_the_sample_says_why_there_are_no_gpus(tmp_path: Path) -> None:
    try:
        import pynvml  # noqa: F401
        pytest.skip("nvidia-ml-py is installed here")
    except ImportError:
        pass
    sampler = PsutilSampler("here", [tmp_path])
    try:
        sample = sampler.sample(utcnow())
    finally:
        sampler.close()
    assert sample.gpus == () and "nvidia-ml-py" in sample.gpu_note


async def test_a_stall_ends_when_the_job_stops_running(nats_server, nc, topology, event_log) -> None:
    async with Monitor(nats_server.url, topology, FAST, ChosenValues()):
        await publish_sample(nc, topology, "heartbeat", "w1", WorkerHeartbeat(worker_id="w1", running=("j7",),
                                                                              at=utcnow()))
        events = await until_events(event_log, lambda e: "JobStalled" in names(e), "j7 stalled")
        await publish_sample(nc, topology, "heartbeat", "w1", WorkerHeartbeat(worker_id="w1", at=utcnow()))
        events = await until_events(event_log, lambda e: "AlertResolved" in names(e), "j7 resolved")
    assert [(type(e).__name__, e.alert_id) for e in events] == [
        ("JobStalled", events[0].alert_id), ("AlertResolved", events[0].alert_id)]
    assert events[1].reason == "job_ended"


async def test_the_alerts_read_model_shows_open_and_resolved_alerts_newest_first(nats_server, nc, topology, event_log,
                                                                                  store) -> None:
    from eventstore.projection import ProjectionRunner
    from eventstore.readmodels.alerts import AlertsProjection, list_alerts, open_alert_count

    t = utcnow()
    raised = ev.AlertRaised(alert_id="a1", rule="cpu_high", target_kind="host", target="h1", value=91.0,
                            threshold=80.0, message="cpu", raised_at=t)
    stalled = ev.JobStalled(alert_id="a2", job_id="j1", worker_id="w1", stall_after_s=600.0,
                            raised_at=t.replace(year=t.year + 1))
    for event in (raised, stalled, ev.AlertResolved(alert_id="a1", value=50.0, resolved_at=t)):
        await event_log.append("alert", event.alert_id, [event])
    await ProjectionRunner(event_log, store, [AlertsProjection()]).catch_up()
    open_rows = await list_alerts(store)
    every = await list_alerts(store, include_resolved=True)
    assert [(r["id"], r["rule"], r["target_kind"], r["target"], r["status"]) for r in open_rows] == [
        ("a2", "job_stalled", "job", "j1", "open")]
    assert "no progress for 600s" in open_rows[0]["message"]
    assert [(r["id"], r["status"], r["resolved_value"], r["reason"]) for r in every] == [
        ("a2", "open", None, None), ("a1", "resolved", 50.0, "recovered")]
    assert await open_alert_count(store) == 1


async def test_stoker_hosts_and_alerts(nats_server, nc, topology, event_log, tmp_path) -> None:
    import asyncio
    import json

    from click.testing import CliRunner

    from eventstore.projection import ProjectionRunner
    from eventstore.readmodels import all_projections
    from eventstore.stores import open_store
    from ops.cli import main

    async def stoker(*args: str):
        base = ["--data-dir", str(tmp_path), "--nats", nats_server.url]
        return await asyncio.to_thread(CliRunner().invoke, main, [*base, *args], env={"STOKER_PREFIX": topology.prefix})

    empty = await stoker("hosts")
    assert empty.exit_code == 0 and "no host samples yet" in empty.output
    sampler = ChosenValues("box-1", cpu=95.0)
    async with Monitor(nats_server.url, topology, msgspec.structs.replace(FAST, host_id="box-1"), sampler):
        await until_events(event_log, lambda e: "AlertRaised" in names(e), "cpu alert raised")
        sampler.set(10.0)
        await until_events(event_log, lambda e: "AlertResolved" in names(e), "resolved")
        sampler.set(99.0)
        await until_events(event_log, lambda e: names(e).count("AlertRaised") == 2, "raised again")
    store = await open_store("", tmp_path / "readmodels.sqlite3")
    try:
        await ProjectionRunner(event_log, store, all_projections()).catch_up()
    finally:
        await store.close()
    shown = await stoker("hosts")
    assert shown.exit_code == 0 and "box-1" in shown.output and "99.0%" in shown.output, shown.output
    listed = json.loads((await stoker("hosts", "--json")).output)
    assert [h["host_id"] for h in listed] == ["box-1"] and listed[0]["cpu_percent"] == 99.0
    open_only = await stoker("alerts")
    assert open_only.exit_code == 0 and open_only.output.count("cpu_high") == 1 and "open" in open_only.output
    every = json.loads((await stoker("alerts", "--all", "--json")).output)
    assert [a["status"] for a in every] == ["open", "resolved"]
    assert every[0]["raised_at"] >= every[1]["raised_at"]
