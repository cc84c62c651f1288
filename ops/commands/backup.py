"""`stoker backup FILE` and `stoker restore FILE`: the whole platform in one archive, and back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from ops import backup_domain as bd
from ops.backup import write_backup
from ops.cli import Cli, pass_cli, run_async
from ops.lock import AlreadyRunning
from ops.output import emit_json
from ops.restore import restore as restore_into


@click.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_cli
@run_async
async def backup(cli: Cli, path: Path) -> None:
    """Write the event log, the checkpoints and maps, the snapshots, the settings and this data dir's credentials
    and CA into one archive (a gzipped tar, 0600: keep it as private as the data dir). See docs/backup.md."""
    async with cli.connection() as (_nc, log):
        manifest = await write_backup(log, cli.settings.data_path, path, cli.nats_url)
    summary = bd.summary(manifest)
    if cli.as_json:
        emit_json({"archive": str(path), **summary})
        return
    click.echo(f"backed up {summary['events']} events (sequences {summary['first_seq']}-{summary['last_seq']}), "
               f"{summary['checkpoints']} checkpoints, {summary['maps']} maps, {summary['snapshot_keys']} snapshot "
               f"keys{', the settings' if manifest.settings else ''}"
               f"{' and the credentials and CA' if manifest.secrets else ''} to {path} (0600)")


@click.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Restore even into a data dir that is not empty (what is there is "
                                            "moved aside to <data dir>.replaced-<time>, not deleted).")
@pass_cli
def restore(cli: Cli, path: Path, force: bool) -> None:
    """Bring a platform back from `stoker backup`'s archive into an empty data dir; then `stoker up`.

    Every member is checked against the manifest first; the events are appended with their original ids,
    headers and sequences, the read models are rebuilt from them by the first `stoker up`.
    """
    data = cli.settings.data_location
    try:
        result = restore_into(path, data, cli.settings.prefix, cli.settings.replicas, force, asyncio.run)
    except (bd.BadArchive, AlreadyRunning, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if cli.as_json:
        emit_json(result)
        return
    lines = [f"restored {result['events']} events, {result['checkpoints']} checkpoints, {result['maps']} maps and "
             f"{result['snapshot_keys']} snapshot keys into {data}"]
    if result["moved_aside"]:
        lines.append(f"  what was in {data} is now in {result['moved_aside']}")
    if result["settings"]:
        lines.append(f"  the backup's settings are in {result['settings']}: run with STOKER_CONFIG={result['settings']}"
                     " (or copy it where you run stoker)")
    lines.append(f"  this machine's worker is {result['local_worker']}; workers of other machines: restart them")
    lines.append(f"next: stoker --data-dir {data} up   (the read models are rebuilt from the log)")
    click.echo("\n".join(lines))


def register(group: click.Group) -> None:
    """Add `stoker backup` and `stoker restore`."""
    group.add_command(backup)
    group.add_command(restore)
