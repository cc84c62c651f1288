"""Bodies of /api/v1/hosts and /api/v1/alerts, and the hosts and alerts parts of the health report."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from gateway.schemas.common import Reply


class GpuSummary(Reply, kw_only=True):
    """One GPU of a host in a few figures."""

    index: int
    name: str = ""
    utilization_percent: float | None = None
    memory_percent: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None


class HostSummary(Reply, kw_only=True):
    """One machine's newest sample in a few figures (the fullest disk; each GPU)."""

    host_id: str
    hostname: str
    sampled_at: datetime
    age_s: float
    cpu_percent: float
    memory_percent: float
    swap_percent: float
    disk_percent: float | None = None
    disk_path: str | None = None
    disk_full_in_h: float | None = None
    load: list[float] = []
    gpus: list[GpuSummary] = []
    gpu_note: str = ""


class HostPoint(Reply, kw_only=True):
    """One sample of a host's history, as its sparklines draw it."""

    at: datetime
    cpu: float
    memory: float
    disk: float | None = None
    gpu: float | None = None  # the busiest GPU's utilisation


class HostView(Reply, kw_only=True):
    """A host card: the newest sample whole, its summary and the recent history."""

    summary: HostSummary
    sample: dict[str, Any]
    history: list[HostPoint] = []


class HostList(Reply, kw_only=True):
    """Every machine a monitor samples."""

    items: list[HostView]
    history_s: float


class AlertView(Reply, kw_only=True):
    """One alert, with what to do about it."""

    id: str
    rule: str
    target_kind: Literal["host", "job"]
    target: str
    status: Literal["open", "resolved"]
    value: float | None = None
    threshold: float
    message: str
    raised_at: datetime
    resolved_at: datetime | None = None
    resolved_value: float | None = None
    reason: str | None = None
    advice: str = ""


class AlertList(Reply, kw_only=True):
    """Alerts, newest first."""

    items: list[AlertView]
