"""`stoker contracts schema` and `stoker replay`: the contract on the wire, and rebuilding read models."""

from __future__ import annotations

import click
import msgspec

from contracts.commands import DiscoveryCommand, SchedulerCommand
from contracts.dispatch import DispatchMessage
from contracts.events import EVENT_TYPES, AnyEvent
from contracts.telemetry import EpisodeReport, JobProgress, WorkerHeartbeat
from eventstore.readmodels import all_projections, projection_named
from eventstore.replay import replay
from eventstore.stores import open_store
from ops.cli import Cli, pass_cli, run_async


def contract_schema() -> dict:
    """The JSON Schema of every message stoker sends, with each event's schema version."""
    kinds = (AnyEvent, SchedulerCommand, DiscoveryCommand, DispatchMessage, JobProgress, EpisodeReport,
             WorkerHeartbeat)
    (_refs, components) = msgspec.json.schema_components(kinds, ref_template="#/$defs/{name}")
    versions = {name: cls.schema for name, cls in EVENT_TYPES.items()}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "stoker messages",
            "x-stoker-event-schema-versions": versions, "$defs": components}


@click.group("contracts")
def contracts_group() -> None:
    """The messages stoker sends."""


@contracts_group.command("schema")
def schema() -> None:
    """Print the JSON Schema of every event, command and telemetry message."""
    click.echo(msgspec.json.format(msgspec.json.encode(contract_schema()), indent=2).decode())


@click.command("replay")
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Rebuild every read model.")
@pass_cli
@run_async
async def replay_command(cli: Cli, name: str | None, everything: bool) -> None:
    """Rebuild a read model from sequence 1 into a shadow table, then swap it in."""
    if not name and not everything:
        raise click.UsageError("name a projection or pass --all")
    projections = all_projections() if everything else [projection_named(name or "")]
    store = await open_store(cli.settings.database_url, cli.settings.sqlite_path)
    try:
        async with cli.connection() as (_nc, log):
            for projection in projections:
                seq = await replay(log, store, projection)
                click.echo(f"{projection.name}: rebuilt up to event {seq}")
    finally:
        await store.close()


def register(group: click.Group) -> None:
    """Add `stoker contracts …` and `stoker replay`."""
    group.add_command(contracts_group)
    group.add_command(replay_command)
