"""`stoker security …`: who may do what on NATS (the permission table), and the platform's NATS users."""

from __future__ import annotations

import click

from contracts.subjects import Topology
from eventstore.credentials import CredentialError, CredentialStore
from eventstore.permissions import permission_table
from ops.cli import Cli, pass_cli
from ops.output import emit_json


@click.group("security")
def security_group() -> None:
    """NATS identities and their permissions."""


@security_group.command("permissions")
@click.option("--prefix", default=None, help="Subject prefix to show them for (default: this installation's).")
@pass_cli
def permissions_command(cli: Cli, prefix: str | None) -> None:
    """Print the permission table: each identity, what it may publish and subscribe to, and what it may not."""
    click.echo(permission_table(Topology(prefix or cli.settings.prefix)), nl=False)


@security_group.command("users")
@pass_cli
def users_command(cli: Cli) -> None:
    """The NATS users of this data dir's platform: role, worker id and public key."""
    try:
        users = CredentialStore(cli.settings.data_path).users()
    except (CredentialError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    rows = [{"role": u.role, "worker_id": u.worker_id, "public_key": u.public_key} for u in users]
    if cli.as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo("no NATS users yet (`stoker up` makes them)")
    for row in rows:
        click.echo(f"{row['role']:<10} {row['worker_id'] or '-':<24} {row['public_key']}")


def register(group: click.Group) -> None:
    """Add `stoker security …`."""
    group.add_command(security_group)
