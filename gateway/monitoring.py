"""What the monitor found, for people: hosts (newest sample, recent history) and alerts with what to do about them.

The samples come from telemetry (`stoker.telemetry.host.<id>`), the alerts from the `alerts` read model.
`/api/v1/hosts`, `/api/v1/alerts`, the health report and the dashboard's Hosts and Alerts views read these.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import msgspec

from contracts.telemetry import HostSample
from eventstore.readmodels.alerts import list_alerts
from eventstore.telemetry import first_seq_since, last_sample, sample_history, sample_keys
from gateway.schemas.monitor import AlertView, GpuSummary, HostPoint, HostSummary, HostView

MAX_HOSTS = 256
MAX_POINTS = 360  # per sparkline: a point a 10 s sample over an hour

# What to do, by rule (a rule configured under another name gets the generic line).
ADVICE = {
    "cpu_high": "Something keeps the CPU busy: `stoker hosts` and the host card name the busiest processes; "
                "move jobs elsewhere with labels, or give the machine fewer slots.",
    "memory_high": "Memory is nearly full: a job may be leaking or too large for this machine; lower its batch "
                   "size or give the worker fewer slots before the kernel starts killing processes.",
    "disk_full": "The disk is nearly full: delete old checkpoints or runs, or move the data dir to a larger disk.",
    "disk_filling": "At the current rate this disk fills within hours: find what writes (checkpoints, logs) and "
                    "make room before jobs start failing.",
    "gpu_hot": "The GPU runs hot: check the machine's airflow and fans; a throttling GPU trains slowly.",
    "gpu_xid": "The GPU driver reported an XID error: look at `dmesg`; a repeating XID usually means the GPU or "
               "its driver needs a reset (stop the worker, reboot the machine).",
    "gpu_missing": "This machine sees fewer GPUs than when the service was installed (a driver that did not "
                   "load at boot): the worker waits for them; run `nvidia-smi`, and `stoker doctor gpu`.",
    "gpu_idle": "The job holds a GPU it does not use: its input pipeline may be the bottleneck, or it waits on "
                "something; look at its progress and logs.",
    "job_on_cpu": "The job asked for a GPU but computes on the CPU: check that it moves its model to "
                  "`ctx.device` and that CUDA is available in the worker's Python.",
    "job_stalled": "The job reports no progress: look at its logs (`stoker logs JOB`); stop it, or submit it "
                   "with `--on-stall restart` to have stoker restart it from its last checkpoint.",
    "host_silent": "No samples from this machine: its monitor (or the machine) is down, or it lost the network; "
                   "`stoker status` on that machine says which.",
}
GENERIC_ADVICE = "See the rule's threshold in `[monitor]` of stoker.toml and the host or job it names."


def summary(sample: HostSample, now: datetime) -> HostSummary:
    """A host's newest sample in a few figures."""
    fullest = max(sample.disks, key=lambda d: d.percent, default=None)
    gpus = [GpuSummary(index=g.index, name=g.name, utilization_percent=g.utilization_percent,
                       memory_percent=round(100.0 * g.memory_used_bytes / g.memory_total_bytes, 1)
                       if g.memory_used_bytes is not None and g.memory_total_bytes else None,
                       temperature_c=g.temperature_c, power_w=g.power_w) for g in sample.gpus]
    return HostSummary(host_id=sample.host_id, hostname=sample.hostname, sampled_at=sample.at,
                       age_s=round(max(0.0, (now - sample.at).total_seconds()), 1), cpu_percent=sample.cpu_percent,
                       memory_percent=sample.memory_percent, swap_percent=sample.swap_percent,
                       disk_percent=fullest.percent if fullest else None, disk_path=fullest.path if fullest else None,
                       disk_full_in_h=min((d.full_in_h for d in sample.disks if d.full_in_h is not None), default=None),
                       load=list(sample.load), gpus=gpus, gpu_note=sample.gpu_note)


def point(sample: HostSample) -> HostPoint:
    """One sample as a point of the sparklines."""
    return HostPoint(at=sample.at, cpu=sample.cpu_percent, memory=sample.memory_percent,
                     disk=max((d.percent for d in sample.disks), default=None),
                     gpu=max((g.utilization_percent for g in sample.gpus if g.utilization_percent is not None),
                             default=None))


def thin(points: list[HostPoint], most: int = MAX_POINTS) -> list[HostPoint]:
    """At most `most` points, evenly spread, the newest kept."""
    if len(points) <= most:
        return points
    step = len(points) / most
    return [points[min(len(points) - 1, round((i + 1) * step) - 1)] for i in range(most)]


async def latest_samples(nc: Any, topology: Any) -> list[HostSample]:
    """Every host's newest sample."""
    keys = (await sample_keys(nc, topology, "host"))[:MAX_HOSTS]
    found = await asyncio.gather(*(last_sample(nc, topology, "host", k, HostSample) for k in keys))
    return [s for s in found if s is not None]


async def host_views(nc: Any, topology: Any, now: datetime, history_s: float) -> list[HostView]:
    """A card per host: its newest sample and `history_s` of history."""
    since = now - timedelta(seconds=history_s)
    views = []
    for sample in await latest_samples(nc, topology):
        history: list[HostPoint] = []
        if history_s > 0:
            start = await first_seq_since(nc, topology, "host", sample.host_id, since)
            if start is not None:
                rows = await sample_history(nc, topology, "host", sample.host_id, HostSample, from_seq=start,
                                            limit=MAX_POINTS * 20)
                history = thin([point(s) for _seq, s in rows])
        views.append(HostView(summary=summary(sample, now), sample=msgspec.to_builtins(sample), history=history))
    return views


def alert_view(row: dict[str, Any]) -> AlertView:
    """An alerts row with its advice."""
    return msgspec.convert({**row, "advice": ADVICE.get(row["rule"], GENERIC_ADVICE)}, AlertView, strict=False)


async def alert_views(store: Any, *, include_resolved: bool, limit: int) -> list[AlertView]:
    """Alerts newest first (open only unless `include_resolved`); none while the read model has no table yet."""
    return [alert_view(r) for r in await list_alerts(store, include_resolved=include_resolved, limit=limit)]
