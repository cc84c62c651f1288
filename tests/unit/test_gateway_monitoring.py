"""The gateway's view of the monitor: advice for every rule stoker ships, sparkline thinning, host summaries."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from contracts.telemetry import DiskFigures, GpuFigures, HostSample
from gateway import monitoring
from gateway.schemas.monitor import HostPoint
from services.monitor.domain import DEFAULT_RULES, SILENT_RULE, STALL_RULE

T0 = datetime(2026, 1, 2, tzinfo=UTC)


def test_every_rule_stoker_ships_says_what_to_do() -> None:
    for name in [r.name for r in DEFAULT_RULES] + [SILENT_RULE, STALL_RULE]:
        assert name in monitoring.ADVICE, f"no advice for {name}"


def test_thinning_keeps_at_most_the_limit_evenly_and_the_newest() -> None:
    points = [HostPoint(at=T0 + timedelta(seconds=i), cpu=float(i), memory=0.0) for i in range(1000)]
    thin = monitoring.thin(points, 100)
    assert len(thin) == 100 and thin[-1] == points[-1]
    assert all(b.cpu - a.cpu == 10 for a, b in itertools.pairwise(thin))
    assert monitoring.thin(points[:5], 100) == points[:5]


def test_a_summary_shows_the_fullest_disk_the_soonest_full_and_each_gpu() -> None:
    sample = HostSample(host_id="h", cpu_percent=5.0, memory_percent=6.0, at=T0, disks=(
        DiskFigures(path="/a", percent=40.0, free_bytes=1, total_bytes=2, full_in_h=5.0),
        DiskFigures(path="/b", percent=90.0, free_bytes=1, total_bytes=2)),
        gpus=(GpuFigures(index=1, memory_used_bytes=1, memory_total_bytes=8),))
    summary = monitoring.summary(sample, T0 + timedelta(seconds=12))
    assert (summary.disk_path, summary.disk_percent, summary.disk_full_in_h, summary.age_s) == ("/b", 90.0, 5.0, 12.0)
    assert summary.gpus[0].memory_percent == 12.5 and summary.gpus[0].utilization_percent is None
    point = monitoring.point(sample)
    assert (point.disk, point.gpu) == (90.0, None)
