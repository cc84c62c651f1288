"""`stoker worker` (join this machine as a worker) and `stoker workers` (who is out there)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import msgspec

from contracts.base import is_valid_id
from contracts.telemetry import WorkerHeartbeat
from eventstore import lifeline, sdnotify
from eventstore.credentials import CredentialError, claim_pool_credential
from eventstore.pki import short_fingerprint
from eventstore.readmodels.workers import last_heartbeats, list_workers
from eventstore.server import NoPlatform
from ops import joined as membership
from ops.cli import Cli, pass_cli, run_async
from ops.commands.jobs import as_json, read_model
from ops.commands.platform import MONITOR_MODULE, WORKER_MODULE, module_runs
from ops.commands.security import revoke_and_requeue
from ops.output import emit_json, table

WORKER_COLUMNS = ("id", "status", "hostname", "slots", "free", "running", "gpus", "labels", "heartbeat", "cpu",
                  "mem")


def worker_process(cli: Cli, nats_url: str | None, worker_id: str | None, labels: tuple[str, ...],
                   slots: int | None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the worker agent `stoker worker` becomes.

    It runs `python -m services.trainer`, as `stoker up` does: the CLI imports no service. The options
    travel as `STOKER_TRAINER_*` variables, which win over stoker.toml as options should. A data dir that
    joined a platform (`--join`) connects there, over TLS pinned to its CA, as the worker it joined as.
    """
    data = cli.settings.data_path
    joined = None if nats_url or cli.settings.nats_url else membership.read_joined(data)
    env = {**os.environ, "STOKER_DATA_DIR": str(data)}
    if joined is not None:
        env |= {"STOKER_NATS_URL": joined.nats_url, "STOKER_NATS_CA": str(membership.ca_path(data)),
                "STOKER_NATS_CREDENTIALS": str(membership.seed_path(data)), "STOKER_PREFIX": joined.prefix,
                "STOKER_TRAINER_WORKER_ID": joined.worker_id}
        labels = labels or tuple(joined.labels)
    else:  # the URL given, else this data dir's running platform (NoPlatform: one line)
        env["STOKER_NATS_URL"] = nats_url or cli.nats_url
        if cli.settings.nats_credentials:  # a worker credential (its id must be the one it was issued for)
            env["STOKER_NATS_CREDENTIALS"] = cli.settings.nats_credentials
    if worker_id:
        env["STOKER_TRAINER_WORKER_ID"] = worker_id
    if labels:
        env["STOKER_TRAINER_LABELS"] = msgspec.json.encode(list(labels)).decode()
    if slots is not None:
        env["STOKER_TRAINER_SLOTS"] = str(slots)
    return [sys.executable, "-m", WORKER_MODULE], env


@click.command("worker")
@click.option("--nats", "nats_url", help="The platform's NATS server, e.g. nats://host:4222.")
@click.option("--id", "worker_id", help="Worker id (default: derived from hostname and data dir, then kept).")
@click.option("--label", "labels", multiple=True, help="Pool label (repeatable; default training, evaluation).")
@click.option("--slots", type=click.IntRange(min=1, max=256), help="Jobs at once (default: one per GPU, else 1).")
@click.option("--join", "join_token", metavar="TOKEN", help="Join the platform this token is for (`stoker join-token "
              "create` there), then work for it; later runs of `stoker worker` need no token.")
@click.option("--pool", "pool", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Work as the first worker credential (<id>.nk) in DIR no other worker holds (compose: "
              "`--scale worker=N`); the id is the file's name.")
@click.option("--discover", is_flag=True, help="With --join: find the platform by mDNS on the LAN first (its "
              "address may have changed since the token was made), falling back to the token's address.")
@pass_cli
def worker(cli: Cli, nats_url: str | None, worker_id: str | None, labels: tuple[str, ...],
           slots: int | None, join_token: str | None, pool: Path | None, discover: bool) -> None:
    """Join this machine to a stoker platform as a worker and run jobs until Ctrl-C."""
    if pool is not None:
        if join_token or worker_id or cli.settings.nats_credentials:
            raise click.UsageError("--pool chooses the id and the credential: it goes without --join, --id "
                                   "and --credentials")
        try:
            worker_id, seed, held = claim_pool_credential(pool)
        except CredentialError as exc:
            raise click.ClickException(str(exc)) from None
        os.set_inheritable(held, True)  # the worker agent holds the claim after the exec, until it ends
        os.environ["STOKER_NATS_CREDENTIALS"] = str(seed)
        click.echo(f"worker {worker_id}: credential {seed}", err=True)
    if join_token:
        if nats_url:
            raise click.UsageError("--join and --nats do not go together: the token says where the platform is")
        if worker_id and not is_valid_id(worker_id):
            raise click.BadParameter(f"{worker_id!r} may hold only letters, digits, '-' and '_'", param_hint="--id")
        joined = _join(cli, join_token, worker_id, discover)
        click.echo(f"joined platform {joined.platform_id} as worker {joined.worker_id} "
                   f"(CA {short_fingerprint(joined.fingerprint)}, NATS {joined.nats_url})", err=True)
        worker_id = None  # the joined id travels with the rest of what was joined
    try:
        argv, env = worker_process(cli, nats_url, worker_id, labels, slots)
    except NoPlatform as exc:
        raise click.ClickException(f"{exc} (a worker of another machine's platform: `stoker worker --join "
                                   "TOKEN`)") from None
    start_monitor(env)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, env)


def monitor_process(worker_env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the monitor beside a worker: it samples this machine, as the worker."""
    env = {**worker_env, "STOKER_MONITOR_ROLE": "sample"}
    sdnotify.strip(env)  # the worker agent (this pid after the exec) speaks for a service unit, not the monitor
    if worker_env.get("STOKER_TRAINER_WORKER_ID"):
        env["STOKER_MONITOR_HOST_ID"] = worker_env["STOKER_TRAINER_WORKER_ID"]
    return [sys.executable, "-m", MONITOR_MODULE], env


def start_monitor(worker_env: dict[str, str]) -> subprocess.Popen | None:
    """Start the monitor beside the worker this process is about to become (exec keeps our pid).

    It holds the read end of a lifeline whose write end this process keeps across the exec, so the
    monitor stops when the worker agent ends, however it ends (eventstore.lifeline).
    """
    if not module_runs(MONITOR_MODULE):
        return None
    read_fd, write_fd = lifeline.open_lifeline()
    argv, env = monitor_process(worker_env)
    try:
        proc = subprocess.Popen(argv, env={**env, **lifeline.child_env(read_fd)}, pass_fds=(read_fd,),
                                stdin=subprocess.DEVNULL)
    except OSError as exc:
        click.echo(f"the monitor could not start beside the worker ({exc}); the worker runs without it", err=True)
        os.close(write_fd)
        return None
    finally:
        os.close(read_fd)
    os.set_inheritable(write_fd, True)  # the worker agent keeps it open after the exec, unknowingly
    return proc


@run_async
async def _join(cli: Cli, token: str, worker_id: str | None, discover: bool = False) -> membership.Joined:
    return await membership.join(cli.settings.data_path, token, worker_id, discover=discover,
                                 note=lambda line: click.echo(line, err=True))


def heartbeat_age(beat: WorkerHeartbeat | None, now: datetime) -> str:
    """How long ago a heartbeat was sent, e.g. `1.2s ago`; `-` when none."""
    if beat is None:
        return "-"
    return f"{max(0.0, (now - beat.at).total_seconds()):.1f}s ago"


def worker_row(record: dict[str, Any], beat: WorkerHeartbeat | None, now: datetime) -> dict[str, Any]:
    """A worker record joined with its last heartbeat, as `stoker workers` shows it."""
    return {"id": record["id"], "status": record["status"], "hostname": record["hostname"], "slots": record["slots"],
            "free": beat.free_slots if beat else None, "running": list(beat.running) if beat else [],
            "gpus": len(record["gpus"]), "labels": record["labels"],
            "heartbeat": heartbeat_age(beat, now), "cpu": beat.cpu_percent if beat else None,
            "mem": beat.memory_percent if beat else None, "last_heartbeat": beat.at if beat else None,
            "addresses": record["addresses"], "version": record.get("version")}


@click.group("workers", invoke_without_command=True)
@click.option("--json", "json_flag", is_flag=True, help="Machine-readable output.")
@click.pass_context
def workers(ctx: click.Context, json_flag: bool) -> None:
    """Known workers: status, capacity, what they run, and their last heartbeat (`revoke ID` cuts one off)."""
    if ctx.invoked_subcommand is None:
        list_known_workers(ctx.find_object(Cli), json_flag)


@workers.command("revoke")
@click.argument("worker_id")
@pass_cli
def revoke(cli: Cli, worker_id: str) -> None:
    """Remove WORKER_ID's NATS credential (a reload, no restart) and requeue its jobs now."""
    revoke_and_requeue(cli, worker_id)


@run_async
async def list_known_workers(cli: Cli, json_flag: bool) -> None:
    """The table (or JSON) of `stoker workers`."""
    async with read_model(cli, "workers") as store:
        records = [] if store is None else await list_workers(store)
    async with cli.connection() as (nc, _log):
        now = datetime.now(UTC)
        beats = await last_heartbeats(nc, cli.topology, [r["id"] for r in records])
    out = [worker_row(r, beats[r["id"]], now) for r in records]
    if as_json(cli, json_flag):
        emit_json(out)
    elif not out:
        click.echo("no workers yet (start one with `stoker worker`, or `stoker up` runs a local one)")
    else:
        cells = [[len(r["running"]) if c == "running" else ",".join(r[c]) if c == "labels" else r[c]
                  for c in WORKER_COLUMNS] for r in out]
        click.echo(table(cells, WORKER_COLUMNS))


def register(group: click.Group) -> None:
    """Add `stoker worker` and `stoker workers`."""
    group.add_command(worker)
    group.add_command(workers)
