"""`stoker hosts` (every machine's latest health sample) and `stoker alerts` (open, or all, newest first)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import msgspec

from contracts.telemetry import HostSample
from eventstore.readmodels.alerts import list_alerts
from eventstore.telemetry import last_sample, sample_keys
from ops.cli import Cli, pass_cli, run_async
from ops.commands.jobs import as_json, read_model
from ops.output import emit_json, table

HOST_COLUMNS = ("host", "hostname", "cpu", "mem", "swap", "disk", "gpus", "sampled")
ALERT_COLUMNS = ("id", "status", "rule", "target", "value", "threshold", "raised_at", "resolved_at", "message")


def host_row(sample: HostSample, now: datetime) -> dict[str, Any]:
    """A host's latest sample as `stoker hosts` shows it (the fullest disk, each GPU's use and temperature)."""
    fullest = max(sample.disks, key=lambda d: d.percent, default=None)
    gpus = [f"{g.utilization_percent or 0:.0f}%/{g.temperature_c or 0:.0f}C" for g in sample.gpus]
    return {"host": sample.host_id, "hostname": sample.hostname, "cpu": f"{sample.cpu_percent:.1f}%",
            "mem": f"{sample.memory_percent:.1f}%", "swap": f"{sample.swap_percent:.1f}%",
            "disk": f"{fullest.percent:.1f}% {fullest.path}" if fullest else "-",
            "gpus": " ".join(gpus) or "-", "sampled": f"{max(0.0, (now - sample.at).total_seconds()):.1f}s ago"}


@click.command("hosts")
@click.option("--json", "json_flag", is_flag=True, help="Machine-readable output (the whole latest samples).")
@pass_cli
@run_async
async def hosts(cli: Cli, json_flag: bool) -> None:
    """Every machine a monitor samples: its latest CPU, memory, disk and GPU figures."""
    async with cli.connection() as (nc, _log):
        keys = await sample_keys(nc, cli.topology, "host")
        samples = [s for key in keys if (s := await last_sample(nc, cli.topology, "host", key, HostSample))]
    if as_json(cli, json_flag):
        emit_json([msgspec.to_builtins(s) for s in samples])
    elif not samples:
        click.echo("no host samples yet (`stoker up` and `stoker worker` run a monitor on their machine)")
    else:
        now = datetime.now(UTC)
        rows = [host_row(s, now) for s in samples]
        click.echo(table([[r[c] for c in HOST_COLUMNS] for r in rows], HOST_COLUMNS))


@click.command("alerts")
@click.option("--all", "include_resolved", is_flag=True, help="Resolved alerts too, not only the open ones.")
@click.option("-n", "--limit", default=100, show_default=True, type=click.IntRange(min=1, max=10_000))
@click.option("--json", "json_flag", is_flag=True, help="Machine-readable output.")
@pass_cli
@run_async
async def alerts(cli: Cli, include_resolved: bool, limit: int, json_flag: bool) -> None:
    """Alerts newest first, from the alerts read model: the open ones, or with --all every one."""
    async with read_model(cli, "alerts") as store:
        rows = [] if store is None else await list_alerts(store, include_resolved=include_resolved, limit=limit)
    if as_json(cli, json_flag):
        emit_json(rows)
    elif not rows:
        click.echo("no alerts" if include_resolved else "no open alerts")
    else:
        click.echo(table([[r[c] for c in ALERT_COLUMNS] for r in rows], ALERT_COLUMNS))


def register(group: click.Group) -> None:
    """Add `stoker hosts`, `stoker alerts` and `stoker health`."""
    from ops.commands import health

    group.add_command(hosts)
    group.add_command(alerts)
    health.register(group)
