"""`stoker security …`: who may do what on NATS (the permission table), and the platform's NATS users."""

from __future__ import annotations

from pathlib import Path

import click

from contracts.base import utcnow
from contracts.commands import DeregisterWorker, WorkerAccepted
from contracts.errors import DomainError, NotFound
from contracts.events import WorkerCredentialEvent, WorkerCredentialIssued, WorkerCredentialRevoked
from contracts.subjects import Topology
from eventstore.connect import NatsUnavailable
from eventstore.credentials import (
    CredentialError,
    CredentialStore,
    public_key,
    write_compose_credentials,
    write_secret,
)
from eventstore.fleet import BundleError, export_node, import_node, read_bundle
from eventstore.micro import call
from eventstore.permissions import permission_table
from eventstore.pki import TlsSetupError
from eventstore.server import NatsServerError, read_record, reload_nats
from ops.cli import Cli, pass_cli, run_async
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


@security_group.command("admit-worker")
@click.argument("worker_id")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the worker's credential (0600); copy it to the worker's machine.")
@pass_cli
def admit_worker(cli: Cli, worker_id: str, out: Path) -> None:
    """Let a worker of another machine in: a new credential for WORKER_ID, effective at once (no restart).

    On that machine: `stoker worker --nats URL --credentials FILE --id WORKER_ID`.
    """
    store = CredentialStore(cli.settings.data_path)
    if out.exists():
        raise click.ClickException(f"{out} exists; choose another --out (a credential is never overwritten)")
    try:
        seed = store.issue_worker(worker_id)
        write_secret(out, seed)
    except (CredentialError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    issued = WorkerCredentialIssued(worker_id=worker_id, key=public_key(seed), issued_at=utcnow())
    click.echo(f"worker {worker_id}: credential written to {out} (keep it secret); {apply(cli, store)}; "
               f"{record(cli, issued)}")


@security_group.command("revoke-worker")
@click.argument("worker_id")
@pass_cli
def revoke_worker(cli: Cli, worker_id: str) -> None:
    """Remove WORKER_ID's credential: its connections are closed and it cannot connect again (no restart);
    its jobs go back to the queue at once. The same as `stoker workers revoke`."""
    revoke_and_requeue(cli, worker_id)


def revoke_and_requeue(cli: Cli, worker_id: str) -> None:
    """Revoke a worker's credential (a reload: no restart), then have discovery record it gone
    (`DeregisterWorker`, reason `revoked`: `WorkerDeregistered`, on which the scheduler requeues its jobs)."""
    store = CredentialStore(cli.settings.data_path)
    try:
        found = store.revoke_worker(worker_id)
    except (CredentialError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        raise click.ClickException(f"no worker {worker_id!r} has a credential here (see `stoker security users`)")
    revoked = WorkerCredentialRevoked(worker_id=worker_id, revoked_at=utcnow())
    click.echo(f"worker {worker_id}: credential revoked; {apply(cli, store)}; {record(cli, revoked)}; "
               f"{requeue_jobs_of(cli, worker_id)}")


@run_async
async def record(cli: Cli, event: WorkerCredentialEvent) -> str:
    """Append a worker credential's change to the log, so every node of a cluster applies it (ops.members);
    what happened, in words. This data dir's own nodes have it already (`apply`)."""
    if read_record(cli.settings.data_path) is None and not cli.settings.nats_url:
        return "not in the log (NATS is not running here): other nodes of a cluster do not learn it"
    try:
        async with cli.connection() as (_nc, event_log):
            await event_log.append(event.aggregate, event.aggregate_id, [event])
    except (DomainError, NatsUnavailable) as exc:
        return f"not in the log ({exc}): other nodes of a cluster do not learn it"
    return "in the log (every node of a cluster applies it)"


@run_async
async def requeue_jobs_of(cli: Cli, worker_id: str) -> str:
    """Tell discovery a revoked worker is gone, so the scheduler requeues its jobs now; what happened, in words.

    Discovery appends the event (it is the one writer of `worker.*`); the CLI, as the admin, only asks."""
    if read_record(cli.settings.data_path) is None and not cli.settings.nats_url:
        return "its jobs go back to the queue when discovery finds it silent"
    later = "its jobs go back to the queue when discovery finds it silent"
    try:
        async with cli.connection() as (nc, _log):
            await call(nc, cli.topology, DeregisterWorker(worker_id=worker_id, reason="revoked"), WorkerAccepted)
    except NotFound:
        return "discovery never knew it, so it ran no jobs"
    except (DomainError, NatsUnavailable) as exc:
        return f"discovery was not told ({exc}): {later}"
    return "discovery recorded it gone, and its jobs went back to the queue"


@security_group.command("compose-credentials")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--workers", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Worker credentials to pre-issue: the most workers `--scale worker=N` may run.")
@click.option("--node", "nodes", multiple=True, default=("nats-1", "nats-2", "nats-3"), show_default=True,
              help="A NATS node's host name, as the other nodes reach it (repeatable).")
@click.option("--route-port", type=click.IntRange(1, 65535), default=6222, show_default=True)
@pass_cli
def compose_credentials(cli: Cli, directory: Path, workers: int, nodes: tuple[str, ...], route_port: int) -> None:
    """Write what compose/docker-compose.yml mounts into DIRECTORY/credentials (made once; run again to add).

    The control plane's seeds, WORKERS worker seeds (workers/worker-<n>.nk), the nats-server `authorization`
    block and route.conf (the route password and a route to every --node).
    """
    try:
        store = write_compose_credentials(directory, Topology(cli.settings.prefix), workers, list(nodes),
                                          route_port)
    except (CredentialError, OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"credentials for {len(nodes)} NATS nodes, the control plane and {workers} workers in {store.root}")


# A cluster across machines (eventstore/fleet.py): what the first machine gives each other node.


@security_group.command("export-node")
@click.argument("name")
@click.option("--address", "addresses", multiple=True, help="An address or other name the node is reached at "
              "(repeatable): its certificate covers NAME, these and loopback.")
@click.option("--worker-id", default=None, help="The id of that machine's own worker (default: NAME's first label).")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the bundle (0600); copy it to the node's machine privately, then delete it.")
@pass_cli
def export_node_command(cli: Cli, name: str, addresses: tuple[str, ...], worker_id: str | None, out: Path) -> None:
    """Write a node bundle for machine NAME of this platform's cluster: the CA certificate, a server certificate
    for NAME, the platform's credentials and one for its worker. There: `stoker security import-node FILE`,
    then `stoker up --listen 0.0.0.0 --peer …`. Workers admitted or revoked later reach every node through the
    log (each node's `stoker up` applies them), not through a new bundle."""
    if out.exists():
        raise click.ClickException(f"{out} exists; choose another --out (a bundle is never overwritten)")
    store = CredentialStore(cli.settings.data_path)
    try:
        bundle = export_node(cli.settings.data_path, Topology(cli.settings.prefix), name, list(addresses), worker_id)
        write_secret(out, bundle.decode())
    except (BundleError, CredentialError, TlsSetupError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    own = read_bundle(bundle)["worker"]
    issued = WorkerCredentialIssued(worker_id=own["id"], key=public_key(own["seed"]), issued_at=utcnow())
    click.echo(f"node {name}: bundle written to {out} (a secret: it holds the platform's credentials); "
               f"{apply(cli, store)}; its worker {record(cli, issued)}")


@security_group.command("import-node")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@pass_cli
def import_node_command(cli: Cli, bundle: Path) -> None:
    """Make this data dir a node of the platform a bundle (`stoker security export-node`) is for; run again
    with a newer bundle to take the platform's users as they are now (a running node reloads)."""
    try:
        text = bundle.read_bytes()
        prefix = read_bundle(text)["prefix"]
        if prefix != cli.settings.prefix:
            raise BundleError(f"the bundle is for subject prefix {prefix!r}, this installation uses "
                              f"{cli.settings.prefix!r}: set STOKER_PREFIX={prefix} (or [common] prefix) here")
        name, worker_id = import_node(cli.settings.data_path, text)
    except (BundleError, CredentialError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    store = CredentialStore(cli.settings.data_path)
    click.echo(f"this data dir is node {name} (its worker: {worker_id}); {apply(cli, store)}")


@run_async
async def apply(cli: Cli, store: CredentialStore) -> str:
    """Rewrite the server's users and reload the running NATS nodes; what that did, in words."""
    store.write_authorization(Topology(cli.settings.prefix))
    if read_record(cli.settings.data_path) is None:
        return "NATS is not running here: it takes effect when `stoker up` starts"
    try:
        nodes = await reload_nats(cli.settings.data_path)
    except NatsServerError as exc:
        raise click.ClickException(f"the new users are written but NATS did not reload: {exc}") from None
    return f"in effect now ({nodes} NATS node{'s' if nodes > 1 else ''} reloaded)"


def register(group: click.Group) -> None:
    """Add `stoker security …`."""
    group.add_command(security_group)
