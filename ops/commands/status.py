"""`stoker status`: what is running from a data dir (the lock holder, NATS, each process, the gateway)."""

from __future__ import annotations

import sys

import click

from ops.cli import Cli, pass_cli
from ops.lock import holder as lock_holder
from ops.lock import pid_alive
from ops.output import emit_json
from ops.runstate import exit_code, gateway_health, read_state, render, summarize


@click.command("status")
@pass_cli
def status(cli: Cli) -> None:
    """What is running from this data dir: the supervisor, NATS, each process, the gateway and its health.

    Exit status: 0 when the platform is up and its health answers ok, 1 when it runs but is starting,
    stopping or not healthy, 3 when nothing runs from this data dir.
    """
    data = cli.settings.data_path
    report = summarize(data, lock_holder(data), read_state(data), pid_alive,
                       lambda url: gateway_health(url, 3.0))
    if cli.as_json:
        emit_json(report)
    else:
        click.echo(render(report))
    sys.exit(exit_code(report))


def register(group: click.Group) -> None:
    """Add `stoker status`."""
    group.add_command(status)
