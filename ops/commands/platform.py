"""`stoker up`, `stoker run SERVICE`, `stoker worker`: running the platform."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import signal

import click

from contracts.subjects import Topology
from eventstore.config import CommonSettings
from eventstore.connect import connect
from eventstore.log import JetStreamLog
from eventstore.observability import configure_logging
from eventstore.server import NatsServer, start_cluster, start_embedded, write_record
from gateway.bootstrap import ensure_admin_token
from ops.cli import Cli, pass_cli
from ops.supervisor import ProcessSpec, Supervisor, python_module

# Control-plane services in start order, with the module that runs each; absent ones are skipped.
SERVICES = [
    ("projector", "services.projector", 8),
    ("discovery", "services.discovery", 7),
    ("scheduler", "services.scheduler", 6),
    ("gateway", "gateway", 4),
]
WORKER_MODULE = "services.trainer"


def module_runs(module: str) -> bool:
    """Whether `python -m module` exists in this installation."""
    try:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except ModuleNotFoundError:
        return False


def process_specs(nats_url: str, settings: CommonSettings, replicas: int, with_worker: bool) -> list[ProcessSpec]:
    """What `stoker up` supervises: each available service, and a local worker."""
    env = {"STOKER_NATS_URL": nats_url, "STOKER_DATA_DIR": str(settings.data_path),
           "STOKER_REPLICAS": str(replicas), "STOKER_LOG_FORMAT": "json"}
    specs = [python_module(name, module, env, rank) for name, module, rank in SERVICES if module_runs(module)]
    if with_worker and module_runs(WORKER_MODULE):
        specs.append(python_module("worker", WORKER_MODULE, env, stop_rank=1, grace=60.0))
    return specs


async def start_nats(settings: CommonSettings, port: int, cluster: int) -> list[NatsServer]:
    """The embedded server (or a local cluster of `cluster` nodes)."""
    if cluster > 1:
        servers = await start_cluster(settings.data_path / "nats-cluster", cluster)
        write_record(settings.data_path, servers[0], ",".join(s.url for s in servers))
        return servers
    return [await start_embedded(settings.data_path, port=port)]


async def _up(cli: Cli, port: int, cluster: int, with_worker: bool) -> None:
    settings = cli.settings
    configure_logging("supervisor", settings.log_format, settings.log_level)
    servers = await start_nats(settings, port, cluster)
    replicas = 3 if cluster > 1 else settings.replicas
    url = servers[0].url if cluster <= 1 else ",".join(s.url for s in servers)
    nc = await connect(url, "stoker-up")
    event_log = JetStreamLog(nc, Topology(settings.prefix))
    await event_log.ensure_streams(replicas)
    click.echo(await ensure_admin_token(event_log, settings.data_path))
    await nc.close()
    specs = process_specs(url, settings, replicas, with_worker)
    supervisor = Supervisor(specs, settings.data_path / "logs")
    await supervisor.start()
    _print_banner(settings, url, specs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    click.echo("stoker: stopping (running jobs checkpoint and go back to the queue)…", err=True)
    await supervisor.stop()
    for server in servers:
        server.stop()
    click.echo("stoker: stopped; nothing was lost.", err=True)


def _print_banner(settings: CommonSettings, url: str, specs: list[ProcessSpec]) -> None:
    names = ", ".join(s.name for s in specs) or "none yet"
    gateway = any(s.name == "gateway" for s in specs)
    lines = [
        "stoker is up.",
        f"  NATS (JetStream):  {url}",
        f"  data:              {settings.data_path}",
        f"  logs:              {settings.data_path / 'logs'}",
        f"  processes:         {names}",
    ]
    if gateway:
        lines.append(f"  gateway:           http://127.0.0.1:{os.environ.get('STOKER_GATEWAY_PORT', '8000')}")
    else:
        lines.append("  gateway:           not part of this installation yet (projections and log only)")
    lines.append("Look inside: stoker events tail --follow   ·   Ctrl-C stops everything cleanly.")
    click.echo("\n".join(lines))


@click.command("up")
@click.option("--port", default=4222, show_default=True, help="NATS client port (a free one if taken).")
@click.option("--cluster", type=click.Choice(["1", "3"]), default="1", help="Run a local 3-node NATS cluster.")
@click.option("--no-worker", is_flag=True, help="Do not start a local worker.")
@pass_cli
def up(cli: Cli, port: int, cluster: str, no_worker: bool) -> None:
    """Start embedded NATS, every service and a local worker; Ctrl-C stops them all cleanly."""
    asyncio.run(_up(cli, port, int(cluster), not no_worker))


@click.command("run")
@click.argument("service")
@pass_cli
def run(cli: Cli, service: str) -> None:
    """Run one service in the foreground (scheduler, discovery, projector, gateway, trainer, …)."""
    modules = {name: module for name, module, _rank in SERVICES} | {"trainer": WORKER_MODULE,
                                                                    "worker": WORKER_MODULE}
    module = modules.get(service)
    if module is None or not module_runs(module):
        known = sorted(name for name, m in modules.items() if module_runs(m))
        raise click.BadParameter(f"unknown service {service!r}; this installation has: {', '.join(known)}")
    _run_module(cli, module)


def _run_module(cli: Cli, module: str) -> None:
    os.environ.setdefault("STOKER_NATS_URL", cli.nats_url)
    os.environ.setdefault("STOKER_DATA_DIR", str(cli.settings.data_path))
    entry = importlib.import_module(f"{module}.__main__")
    entry.cli_main()


def register(group: click.Group) -> None:
    """Add `stoker up` and `stoker run`."""
    group.add_command(up)
    group.add_command(run)
