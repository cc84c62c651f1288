"""GET /metrics: Prometheus text that `prometheus_client.parser` reads, with jobs, workers, alerts and hosts."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from contracts import events as ev
from contracts.base import utcnow
from contracts.telemetry import DiskFigures, GpuFigures, HostSample
from eventstore.telemetry import publish_sample
from tests.integration.fake_worker import eventually
from tests.integration.gateway_support import gateway_stack, run_job


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_are_prometheus_text_with_the_platform_s_figures(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path) as stack:
        await run_job(stack)
        raised = ev.AlertRaised(alert_id="a1", rule="cpu_high", target_kind="host", target="box", value=90.0,
                                threshold=80.0, raised_at=utcnow())
        await stack.log.append("alert", "a1", [raised])
        host = HostSample(host_id="box", cpu_percent=42.5, memory_percent=61.0, at=utcnow(),
                          disks=(DiskFigures(path="/data", percent=70.0, free_bytes=123, total_bytes=400),),
                          gpus=(GpuFigures(index=0, utilization_percent=99.0, temperature_c=71.0, xid_errors=2),))
        await publish_sample(nc, topology, "host", "box", host)
        await stack.projected()
        async with stack.client(None) as anonymous:
            refused = await anonymous.get("/metrics")
        async with stack.client("viewer") as client:
            async def scraped():
                reply = await client.get("/metrics")
                figures = samples(reply.text)
                return (reply, figures) if ("stoker_host_cpu_percent", (("host", "box"),)) in figures else None

            reply, figures = await eventually(scraped, what="host sample scraped")
    assert refused.status_code == 401
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    assert figures[("stoker_jobs", (("state", "completed"),))] == 1.0
    assert figures[("stoker_queue_depth", ())] == 0.0
    assert figures[("stoker_workers", (("status", "healthy"),))] >= 1.0
    assert figures[("stoker_alerts_open", (("rule", "cpu_high"),))] == 1.0
    assert figures[("stoker_projection_lag_events", (("projection", "alerts"),))] == 0.0
    assert figures[("stoker_host_cpu_percent", (("host", "box"),))] == 42.5
    assert figures[("stoker_host_disk_free_bytes", (("host", "box"), ("path", "/data")))] == 123.0
    assert figures[("stoker_gpu_temperature_celsius", (("gpu", "0"), ("host", "box")))] == 71.0
    assert figures[("stoker_gpu_xid_errors", (("gpu", "0"), ("host", "box")))] == 2.0


async def test_metrics_can_be_public_by_setting(nats_server, nc, topology, tmp_path) -> None:
    async with gateway_stack(nats_server.url, nc, topology, tmp_path, services=False, metrics_public=True) as stack:
        async with stack.client(None) as anonymous:
            reply = await anonymous.get("/metrics")
    assert reply.status_code == 200 and ("stoker_queue_depth", ()) in samples(reply.text)
