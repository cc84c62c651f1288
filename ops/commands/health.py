"""`stoker health [--json]` (the whole platform's health, from the gateway's report) and `stoker health report`.

The gateway's `GET /api/v1/health` is the one place health is assessed (services, read models and their lag,
streams, the store, workers, and what the monitors say: hosts, GPUs, open alerts); this prints it for a
person and exits 0 only when it says healthy. `stoker health report` writes the same report, stamped,
to a JSON file (the "export health report" of the user's plans).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ops.cli import Cli, pass_cli
from ops.lock import holder as lock_holder
from ops.output import emit_json
from ops.runstate import gateway_health, read_state

DEFAULT_URL = "http://127.0.0.1:8000"


def gateway_url(cli: Cli, given: str | None) -> str:
    """Where the gateway is: --url / STOKER_GATEWAY_URL, else the one `stoker up` runs from this data dir."""
    if given:
        return given
    data = cli.settings.data_path
    holder, state = lock_holder(data) or {}, read_state(data) or {}
    return holder.get("gateway") or state.get("gateway") or DEFAULT_URL


def fetch(url: str, timeout: float) -> tuple[dict[str, Any] | None, str]:
    """The gateway's health report, or None and why there is none."""
    code, body, why = gateway_health(url, timeout)
    if code is None or body is None:
        return None, f"the gateway at {url} does not answer ({why or 'no report'})"
    return body, ""


def _pct(value: Any) -> str:
    return "-" if value is None else f"{float(value):.0f}%"


def render(report: dict[str, Any]) -> str:
    """The report as a person reads it: one line per part, what is wrong first."""
    lines = [f"stoker health: {report.get('status')} ({report.get('state')})  version {report.get('version')}"
             f"  at {report.get('timestamp')}"]
    lines += [f"  PROBLEM  {p}" for p in report.get("problems", [])]
    lines += [f"  warning  {w}" for w in report.get("warnings", [])]
    workers = report.get("workers", {})
    lines.append(f"database: {report.get('database')}   storage: {report.get('storage')}   "
                 f"workers: {workers.get('count', 0)} ({workers.get('status')})")
    lines.append("services: " + ("  ".join(
        f"{s['name']} {'up' if s.get('up') else 'DOWN'}({s.get('instances', 0)})" for s in report.get("services", []))
        or "-"))
    lines.append("streams:  " + ("  ".join(
        f"{s['name']} {'ok' if s.get('ok') else 'FAILING'} {s.get('messages', 0)} msgs"
        for s in report.get("streams", [])) or "-"))
    lines.append("read models: " + ("  ".join(
        f"{p['name']} lag {p.get('lag', 0)}" for p in report.get("projections", [])) or "-"))
    hosts = report.get("hosts", [])
    lines.append(f"hosts ({len(hosts)}):" + ("" if hosts else " none sampled yet"))
    for h in hosts:
        gpus = " ".join(f"gpu{g['index']} {_pct(g.get('utilization_percent'))} "
                        f"{'-' if g.get('temperature_c') is None else round(g['temperature_c'])}C"
                        for g in h.get("gpus", [])) or h.get("gpu_note") or "no GPU"
        lines.append(f"  {h['host_id']}  cpu {_pct(h.get('cpu_percent'))}  mem {_pct(h.get('memory_percent'))}  "
                     f"disk {_pct(h.get('disk_percent'))}  {gpus}  ({h.get('age_s', 0):.0f}s ago)")
    alerts = report.get("alerts", [])
    lines.append(f"open alerts ({report.get('open_alerts', len(alerts))}):" + ("" if alerts else " none"))
    lines += [f"  {a['rule']} on {a['target']}: {a.get('message', '')}  (since {a.get('raised_at')})" for a in alerts]
    return "\n".join(lines)


@click.group("health", invoke_without_command=True)
@click.option("--url", envvar="STOKER_GATEWAY_URL", help="The gateway (default: the one `stoker up` runs here).")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(min=0.1), help="Seconds.")
@click.option("--json", "json_flag", is_flag=True, help="The gateway's whole report as JSON.")
@click.pass_context
@pass_cli
def health(cli: Cli, ctx: click.Context, url: str | None, timeout: float, json_flag: bool) -> None:
    """The whole platform's health: services, read models and lag, streams, hosts, GPUs, open alerts.

    Exit status: 0 when healthy, 1 when not (or when the gateway does not answer).
    """
    ctx.meta["stoker.health"] = (gateway_url(cli, url), timeout)
    if ctx.invoked_subcommand is not None:
        return
    report, why = fetch(*ctx.meta["stoker.health"])
    if report is None:
        click.echo(f"stoker health: unhealthy: {why}", err=True)
        sys.exit(1)
    if json_flag or cli.as_json:
        emit_json(report)
    else:
        click.echo(render(report))
    sys.exit(0 if report.get("status") == "healthy" else 1)


@health.command("report")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True,
              help="The folder the report file goes to.")
@click.pass_context
def report_file(ctx: click.Context, out_dir: Path) -> None:
    """Write the health report to `stoker-health-<UTC time>.json` (exit 1 when it says unhealthy)."""
    url, timeout = ctx.meta["stoker.health"]
    report, why = fetch(url, timeout)
    now = datetime.now(UTC)
    document = {"generated_at": now.isoformat(), "gateway": url,
                **(report or {"status": "unhealthy", "problems": [why]})}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"stoker-health-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    click.echo(str(path))
    sys.exit(0 if document.get("status") == "healthy" else 1)


def register(group: click.Group) -> None:
    """Add `stoker health`."""
    group.add_command(health)
