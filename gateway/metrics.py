"""`GET /metrics`: the platform's figures in the Prometheus text format (`prometheus-client`).

Built per scrape from the read models, the latest host samples and the log's position, so the gateway
keeps no counters of its own and every gateway of a platform answers the same. A viewer token is
needed unless `[gateway] metrics_public = true` (a scraper on a trusted network).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from litestar import Response, get
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from contracts.telemetry import HostSample
from eventstore.readmodels import projection_checkpoints
from eventstore.readmodels.alerts import open_alerts_by_rule
from eventstore.readmodels.jobs import count_jobs_by_status, oldest_queued_at
from eventstore.readmodels.workers import count_workers_by_status
from eventstore.telemetry import last_sample, sample_keys
from gateway.auth import role_guard
from gateway.controllers.common import GW

MAX_HOSTS = 1000


async def metrics_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """A viewer token, unless the metrics are public by setting."""
    if not connection.app.state.gateway.settings.gateway.metrics_public:
        await role_guard(connection, handler)


def gauge(name: str, doc: str, labels: tuple[str, ...], values: dict[tuple[str, ...], float]) -> GaugeMetricFamily:
    """One gauge family with a sample per label tuple."""
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


async def platform_metrics(gw: GW, now: datetime) -> list[Metric]:
    """Every family, read now."""
    store = gw.store
    jobs = await count_jobs_by_status(store)
    oldest = await oldest_queued_at(store)
    age = max(0.0, (now - datetime.fromisoformat(oldest.replace("Z", "+00:00"))).total_seconds()) if oldest else 0.0
    last_seq = await gw.log.last_seq()
    out = [
        gauge("stoker_jobs", "Jobs by state, from the jobs read model.", ("state",),
              {(s,): n for s, n in jobs.items()}),
        gauge("stoker_queue_depth", "Jobs waiting for a slot.", (), {(): jobs.get("queued", 0)}),
        gauge("stoker_queue_oldest_age_seconds", "How long the longest-waiting queued job has waited.", (),
              {(): age}),
        gauge("stoker_workers", "Workers by status.", ("status",),
              {(s,): n for s, n in (await count_workers_by_status(store)).items()}),
        gauge("stoker_alerts_open", "Open alerts by rule.", ("rule",),
              {(r,): n for r, n in (await open_alerts_by_rule(store)).items()}),
        gauge("stoker_events_last_sequence", "The event log's last sequence.", (), {(): last_seq}),
        gauge("stoker_projection_lag_events", "Events in the log a read model has not applied yet.", ("projection",),
              {(p,): max(0, last_seq - seq) for p, (seq, _at) in (await projection_checkpoints(store)).items()}),
    ]
    samples = []
    for key in (await sample_keys(gw.nc, gw.topology, "host"))[:MAX_HOSTS]:
        sample = await last_sample(gw.nc, gw.topology, "host", key, HostSample)
        if sample is not None:
            samples.append(sample)
    return out + list(host_metrics(samples))


def host_metrics(samples: list[HostSample]) -> Iterator[Metric]:
    """Host and GPU gauges from each host's latest sample."""
    yield gauge("stoker_host_cpu_percent", "CPU use of the host.", ("host",),
                {(s.host_id,): s.cpu_percent for s in samples})
    yield gauge("stoker_host_memory_percent", "Memory use of the host.", ("host",),
                {(s.host_id,): s.memory_percent for s in samples})
    yield gauge("stoker_host_disk_used_percent", "Use of each watched disk.", ("host", "path"),
                {(s.host_id, d.path): d.percent for s in samples for d in s.disks})
    yield gauge("stoker_host_disk_free_bytes", "Free bytes of each watched disk.", ("host", "path"),
                {(s.host_id, d.path): d.free_bytes for s in samples for d in s.disks})
    yield gauge("stoker_host_sample_timestamp_seconds", "When the host's latest sample was taken.", ("host",),
                {(s.host_id,): s.at.timestamp() for s in samples})
    gpus = [(s.host_id, str(g.index), g) for s in samples for g in s.gpus]
    for name, doc, field in (("stoker_gpu_utilization_percent", "GPU utilisation.", "utilization_percent"),
                             ("stoker_gpu_memory_used_bytes", "GPU memory in use.", "memory_used_bytes"),
                             ("stoker_gpu_temperature_celsius", "GPU temperature.", "temperature_c"),
                             ("stoker_gpu_power_watts", "GPU power draw.", "power_w")):
        yield gauge(name, doc, ("host", "gpu"),
                    {(h, i): getattr(g, field) for h, i, g in gpus if getattr(g, field) is not None})
    yield gauge("stoker_gpu_xid_errors", "XID errors seen since the host's monitor started.", ("host", "gpu"),
                {(h, i): g.xid_errors for h, i, g in gpus})


class _Families:
    """A collector that hands prometheus-client families already read."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


@get("/metrics", guards=[metrics_guard], opt={"role": "viewer"}, include_in_schema=False)
async def metrics(gw: GW) -> Response[bytes]:
    """The platform's metrics in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(await platform_metrics(gw, datetime.now(UTC))))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
