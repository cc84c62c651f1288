"""`stoker workloads [NAME]`: the workloads the registered workers offer, and the parameters each declares."""

from __future__ import annotations

import click

from contracts.params import param_rows
from eventstore.readmodels.workers import offered_workloads
from ops.cli import Cli, pass_cli, run_async
from ops.commands.jobs import as_json, read_model
from ops.output import emit_json, table

PARAM_COLUMNS = ["parameter", "type", "default", "description"]


def param_table(schema: dict | None) -> str:
    """A workload's declared parameters as a table (or a line saying it declares none)."""
    if not schema:
        return "  (declares no parameters: its params are not checked)"
    rows = [[r["name"], r["type"], "" if r["default"] is None else r["default"], r["description"]]
            for r in param_rows(schema)]
    return "\n".join("  " + line for line in table(rows, PARAM_COLUMNS).splitlines())


@click.command("workloads")
@click.argument("name", required=False)
@click.option("--json", "json_flag", is_flag=True, help="Machine-readable output (JSON schemas included).")
@pass_cli
@run_async
async def workloads(cli: Cli, name: str | None, json_flag: bool) -> None:
    """Every workload the registered workers offer with its parameters (or only NAME's)."""
    async with read_model(cli, "workers") as store:
        offers = [] if store is None else await offered_workloads(store)
    if name is not None:
        offers = [o for o in offers if o["name"] == name]
        if not offers:
            raise ValueError(f"no registered worker offers a workload {name!r} (stoker workloads lists them)")
    if as_json(cli, json_flag):
        emit_json(offers)
        return
    if not offers:
        click.echo("no workloads offered yet: is a worker registered (stoker workers)?")
    for offer in offers:
        healthy = f"{offer['healthy_workers']} healthy of {len(offer['workers'])} worker(s)"
        click.echo(f"{offer['name']}  ({healthy})")
        click.echo(param_table(offer["params_schema"]))


def register(group: click.Group) -> None:
    """Add `stoker workloads`."""
    group.add_command(workloads)
