"""`stoker maps`, `stoker maps upload FILE [--name N]`, `stoker maps rm ID`: maps (files runs use).

Uploads and deletions go straight to the log and the maps bucket, as the gateway's do (gateway/maps.py);
the list comes from the maps read model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from contracts.errors import InvalidCommand
from eventstore.readmodels.maps import list_maps
from eventstore.stores import open_store
from gateway.maps import MapFiles, delete_map, upload_map
from gateway.settings import load
from ops.cli import Cli, pass_cli, run_async
from ops.commands.jobs import as_json, read_model
from ops.output import emit_json, table

COLUMNS = ["id", "name", "filename", "size_bytes", "train_count", "test_count", "uploaded_at"]


@click.group("maps", invoke_without_command=True)
@click.option("--json", "json_flag", is_flag=True, help="Machine-readable output.")
@click.pass_context
def maps_group(ctx: click.Context, json_flag: bool) -> None:
    """Maps: files runs use (a level, an environment config, a data shard), referenced by `map_id`."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_command, json_flag=json_flag)


@maps_group.command("list")
@click.option("--json", "json_flag", is_flag=True, help="Machine-readable output.")
@pass_cli
@run_async
async def list_command(cli: Cli, json_flag: bool) -> None:
    """Every map and how many training and evaluation runs used it."""
    async with read_model(cli, "maps") as store:
        rows = [] if store is None else await list_maps(store)
    if as_json(cli, json_flag):
        emit_json(rows)
    elif not rows:
        click.echo("no maps yet: stoker maps upload FILE")
    else:
        click.echo(table([[r[c] for c in COLUMNS] for r in rows], COLUMNS))


def read_map(path: Path, limit: int) -> bytes:
    """The file's bytes; InvalidCommand when it is over the limit (read no further than that)."""
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidCommand(f"{path} is over the limit of {limit} bytes (maps_max_bytes)")
    return data


@maps_group.command("upload")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", help="Display name (default: the file name without its suffix).")
@pass_cli
@run_async
async def upload(cli: Cli, path: Path, name: str | None) -> None:
    """Store a map; prints its id."""
    limit = load().gateway.maps_max_bytes
    data = await asyncio.to_thread(read_map, path, limit)
    async with cli.connection() as (nc, log):
        store = await open_store(cli.settings.database_url, cli.settings.sqlite_path, readonly=True)
        try:
            event, _seq = await upload_map(log, store, MapFiles(nc.jetstream(), cli.topology.map_bucket,
                                                                cli.settings.replicas),
                                           data, path.name, name, limit)
        finally:
            await store.close()
    if cli.as_json:
        emit_json({"id": event.map_id, "name": event.name, "filename": event.filename, "sha256": event.sha256,
                   "size_bytes": event.size})
    else:
        click.echo(f"map {event.map_id}: {event.name} ({event.filename}, {event.size} bytes, sha256 {event.sha256})")


@maps_group.command("rm")
@click.argument("map_id", type=click.IntRange(min=1))
@pass_cli
@run_async
async def remove(cli: Cli, map_id: int) -> None:
    """Delete a map (refused while a queued or running job uses it)."""
    async with cli.connection() as (_nc, log):
        store = await open_store(cli.settings.database_url, cli.settings.sqlite_path, readonly=True)
        try:
            await delete_map(log, store, map_id)
        finally:
            await store.close()
    click.echo(f"map {map_id} deleted")


def register(group: click.Group) -> None:
    """Add the maps commands."""
    group.add_command(maps_group)
