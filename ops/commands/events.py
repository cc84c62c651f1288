"""`stoker events tail|show|export|import`: looking inside the event log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import msgspec

from contracts.codec import MalformedEvent
from eventstore.log import TYPE, JetStreamLog, StoredEvent
from eventstore.projection import dead_letters
from eventstore.records import event_record
from eventstore.stores import open_store
from eventstore.stores.sqlite import NoReadModel
from ops.cli import Cli, pass_cli, run_async
from ops.eventfile import append_all, read_export, write_events
from ops.output import emit_json, table

SUMMARY_SKIP = {"type", "job_id", "worker_id", "token_id"}


def event_line(stored: StoredEvent) -> str:
    """One readable line: seq, time, type, aggregate and the payload's interesting fields."""
    payload = msgspec.to_builtins(stored.event)
    fields = " ".join(f"{k}={_short(v)}" for k, v in payload.items()
                      if k not in SUMMARY_SKIP and v not in (None, {}, [], ""))
    when = stored.time.strftime("%H:%M:%S.%f")[:-3] if stored.time else "-"
    return f"{stored.seq:>8}  {when}  {stored.type:<18} {stored.aggregate}/{stored.aggregate_id}  {fields}"


def malformed_record(msg: Any, reason: str) -> dict[str, Any]:
    """A message that is no readable event, as a JSON-ready dict: where it is, why, and its bytes."""
    headers = dict(msg.headers or {})
    when = msg.metadata.timestamp
    return {"seq": msg.metadata.sequence.stream, "time": when.isoformat() if when else None,
            "subject": msg.subject, "type": headers.get(TYPE), "malformed": reason, "headers": headers,
            "raw": msg.data.decode(errors="replace")}


def malformed_line(msg: Any, reason: str) -> str:
    """One readable line for a skipped message: seq, time, MALFORMED, its subject and the reason."""
    when = msg.metadata.timestamp
    at = when.strftime("%H:%M:%S.%f")[:-3] if when else "-"
    return f"{msg.metadata.sequence.stream:>8}  {at}  {'MALFORMED':<18} {msg.subject}  {_short(reason, 120)}"


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _filter_subject(log: JetStreamLog, aggregate: str | None, aggregate_id: str | None) -> str | None:
    if not aggregate and not aggregate_id:
        return None
    return log.topology.events(aggregate or "*", aggregate_id or "*")


@click.group("events")
def events_group() -> None:
    """Look inside the event log."""


@events_group.command("tail")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they are appended.")
@click.option("--aggregate", help="Only events of this aggregate kind (job, worker, token).")
@click.option("--id", "aggregate_id", help="Only events of this aggregate id.")
@click.option("-n", "--last", default=20, show_default=True, help="How many recent events to start with.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
@pass_cli
@run_async
async def tail(cli: Cli, follow: bool, aggregate: str | None, aggregate_id: str | None, last: int,
               as_json: bool) -> None:
    """The newest events, oldest first; with --follow, new ones as they come."""
    as_json = as_json or cli.as_json
    async with cli.connection() as (_nc, log):
        subject = _filter_subject(log, aggregate, aggregate_id)
        end = await log.last_seq()
        start = 1 if subject else max(1, end - last + 1)
        recent = [] if end == 0 else [m async for m in log.read_raw(start, until_seq=end, filter_subject=subject)]
        for msg in recent[-last:] if last else recent:
            _print(log, msg, as_json)
        if follow:
            async for msg in log.follow_raw(end + 1, filter_subject=subject):
                _print(log, msg, as_json)


def _print(log: JetStreamLog, msg: Any, as_json: bool) -> None:
    # Every message is shown: one that is no readable event is marked, with the reason it is skipped.
    try:
        stored = log.decode_strict(msg)
    except MalformedEvent as exc:
        if as_json:
            emit_json(malformed_record(msg, str(exc)))
        else:
            click.echo(malformed_line(msg, str(exc)))
        return
    if as_json:
        emit_json(event_record(stored))
    else:
        click.echo(event_line(stored))


@events_group.command("show")
@click.argument("seq", type=click.IntRange(min=1))
@pass_cli
@run_async
async def show(cli: Cli, seq: int) -> None:
    """One event by stream sequence, with every header."""
    async with cli.connection() as (_nc, log):
        msg = await log.raw_at(seq)
        if msg is None:
            raise click.ClickException(f"no event with sequence {seq}")
        record: dict[str, Any] = {"seq": seq, "subject": msg.subject, "headers": dict(msg.headers or {})}
        try:
            record["event"] = msgspec.json.decode(msg.data)
        except msgspec.DecodeError:
            record["raw"] = msg.data.decode(errors="replace")
        try:
            from contracts.codec import decode_event

            decode_event((msg.headers or {}).get("Stoker-Type"), (msg.headers or {}).get("Stoker-Schema"), msg.data)
        except MalformedEvent as exc:
            record["malformed"] = str(exc)
        click.echo(msgspec.json.format(msgspec.json.encode(record), indent=2).decode())


@events_group.command("dead-letters")
@click.option("-n", "--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="JSON lines.")
@pass_cli
@run_async
async def dead_letters_command(cli: Cli, limit: int, as_json: bool) -> None:
    """Events the read models passed over: malformed, or their projection could not apply them (newest first)."""
    try:
        store = await open_store(cli.settings.database_url, cli.settings.sqlite_path, readonly=True)
    except NoReadModel:
        if not (as_json or cli.as_json):
            click.echo("no dead letters: no read model here yet (nothing has been projected)")
        return
    try:
        rows = await dead_letters(store, limit)
    finally:
        await store.close()
    if as_json or cli.as_json:
        for row in rows:
            emit_json(row)
        return
    if not rows:
        click.echo("no dead letters: every read model applied every event")
        return
    click.echo(table([(r["seq"], r["projection"], r["reason"], r["event_type"] or "-", r["subject"],
                       _short(r["error"], 80)) for r in rows],
                     ["SEQ", "PROJECTION", "REASON", "TYPE", "SUBJECT", "ERROR"]))


@events_group.command("export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_cli
@run_async
async def export(cli: Cli, path: Path) -> None:
    """Write every stored message (malformed ones too) to a JSON-lines file (`stoker backup` keeps everything)."""
    async with cli.connection() as (_nc, log):
        with path.open("w") as out:
            count, _first, _last = await write_events(log, out)
    click.echo(f"exported {count} events to {path}", err=True)


@events_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--into-non-empty", is_flag=True, help="Append even though the stream already holds events.")
@pass_cli
@run_async
async def import_(cli: Cli, path: Path, into_non_empty: bool) -> None:
    """Append an export file's events, in order, with their original ids and headers."""
    async with cli.connection(require_log=False) as (_nc, log):
        await log.ensure_streams(cli.settings.replicas)
        existing = await log.last_seq()
        if existing and not into_non_empty:
            raise click.ClickException(f"the event stream already holds {existing} events; "
                                       "pass --into-non-empty to append anyway")
        count = await append_all(log, read_export(path, log))
    click.echo(f"imported {count} events from {path}", err=True)


@events_group.command("init")
@pass_cli
@run_async
async def init(cli: Cli) -> None:
    """Create the streams and buckets (as the admin identity), as `stoker up` does; existing ones are kept.

    For a platform whose NATS `stoker up` does not start (compose/docker-compose.yml runs it once).
    """
    async with cli.connection(require_log=False) as (_nc, log):
        await log.ensure_streams(cli.settings.replicas)
    click.echo(f"streams and buckets ready ({cli.settings.replicas} replica"
               f"{'s' if cli.settings.replicas > 1 else ''})", err=True)


def register(group: click.Group) -> None:
    """Add `stoker events …`."""
    group.add_command(events_group)
