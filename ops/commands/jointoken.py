"""`stoker join-token create|list|revoke`: how a new machine joins this platform (see ops.joining)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from cryptography import x509

from contracts.base import utcnow
from eventstore.pki import SERVER_CERT, TLS_DIR, cert_names, interface_addresses, short_fingerprint
from eventstore.server import read_record
from ops.cli import Cli, pass_cli, run_async
from ops.commands.tokens import parse_duration
from ops.join_domain import ordered
from ops.joining import (
    advertised_urls,
    check_labels,
    issue_join_token,
    load_join_tokens,
    nats_users,
    revoke_join_token,
    uncovered_hosts,
)
from ops.jointoken import decode_token, qr_text
from ops.output import emit_json, table


class NoTlsListener(click.ClickException):
    """The platform here cannot be joined from another machine."""


def _served(cli: Cli) -> tuple[dict, set[str]]:
    """The running platform's NATS record and the names its certificate covers; refuse when it has no TLS."""
    record = read_record(cli.settings.data_path)
    if record is None:
        raise NoTlsListener(f"no platform runs from {cli.settings.data_path}; start it with "
                            "`stoker up --listen 0.0.0.0` first")
    if not record.get("ca"):
        raise NoTlsListener("this platform's NATS listens on 127.0.0.1 without TLS, so no other machine can join; "
                            "restart it with `stoker up --listen 0.0.0.0` (or [nats] listen in stoker.toml)")
    cert = x509.load_pem_x509_certificate((Path(cli.settings.data_path) / TLS_DIR / SERVER_CERT).read_bytes())
    return record, cert_names(cert)


@click.group("join-token")
def join_token_group() -> None:
    """Tokens that let a new machine join as a worker: `stoker worker --join TOKEN` there."""


@join_token_group.command("create")
@click.option("--labels", "labels", multiple=True, help="Pool labels of the worker (comma-separated or repeated).")
@click.option("--expires", default="1h", show_default=True, help="Lifetime such as 15m, 1h or 7d.")
@click.option("--reusable", is_flag=True, help="Any number of machines may join with it until it expires.")
@click.option("--name", default="", help="What the token is for.")
@click.option("--url", "urls", multiple=True, help="NATS URL the machine should use (default: this one's addresses).")
@click.option("--qr/--no-qr", default=None, help="Show a QR code (default: when stderr is a terminal).")
@click.option("--no-url", is_flag=True, help="Carry no address: the machine finds the platform by mDNS on the LAN "
              "(where the address changes; `stoker discover` shows what it would find).")
@pass_cli
@run_async
async def create(cli: Cli, labels: tuple[str, ...], expires: str, reusable: bool, name: str, urls: tuple[str, ...],
                 qr: bool | None, no_url: bool) -> None:
    """Make a join token; it is printed this once (and as a QR code)."""
    lifetime, wanted = parse_duration(expires), check_labels(labels)
    if no_url and urls:
        raise click.UsageError("--no-url and --url do not go together")
    record, names = _served(cli)
    chosen = [] if no_url else advertised_urls(record["url"], record.get("listen") or "127.0.0.1",
                                                interface_addresses(), urls)
    missing = uncovered_hosts(chosen, names)
    if missing:
        raise click.ClickException(f"the server certificate does not cover {', '.join(missing)}: a machine would "
                                   "refuse it; add the name to [nats] names in stoker.toml and restart `stoker up`")
    async with cli.connection() as (_nc, log):
        users = nats_users(cli.settings.data_path, cli.topology)
        event, text = await issue_join_token(log, cli.settings.data_path, chosen, expires_in=lifetime, labels=wanted,
                                             reusable=reusable, name=name, users=users)
    fingerprint = decode_token(text).fingerprint
    if cli.as_json:
        emit_json({"token_id": event.token_id, "token": text, "expires_at": event.expires_at, "urls": chosen,
                   "labels": list(wanted), "reusable": reusable, "ca_sha256": fingerprint})
        return
    click.echo(text)
    if qr if qr is not None else sys.stderr.isatty():
        click.echo(qr_text(text), err=True, nl=False)
    use = "any number of machines" if reusable else "one machine"
    click.echo(f"join token {event.token_id} for {use}, expires {event.expires_at:%Y-%m-%d %H:%M} UTC; "
               f"CA {short_fingerprint(fingerprint)}; NATS {', '.join(chosen) or 'found by mDNS'}", err=True)
    click.echo("on the new machine: stoker worker --join TOKEN   (the token is a secret: share it privately)",
               err=True)


@join_token_group.command("list")
@pass_cli
@run_async
async def list_tokens(cli: Cli) -> None:
    """Every join token made here and who joined with it (never the tokens themselves)."""
    async with cli.connection() as (_nc, log):
        tokens = (await load_join_tokens(log)).state
    now = utcnow()
    records = ordered(tokens.values())
    if cli.as_json:
        emit_json([{"token_id": r.token_id, "state": r.status(now), "labels": list(r.labels), "reusable": r.reusable,
                    "issued_at": r.issued_at, "expires_at": r.expires_at, "revoked_at": r.revoked_at, "name": r.name,
                    "workers": [u.worker_id for u in r.uses]} for r in records])
        return
    rows = [(r.token_id, r.status(now), ",".join(r.labels) or "-", "yes" if r.reusable else "no",
             f"{r.expires_at:%Y-%m-%d %H:%M}", ",".join(u.worker_id for u in r.uses) or "-", r.name)
            for r in records]
    click.echo(table(rows, ["id", "state", "labels", "reusable", "expires", "workers", "name"]) if rows
               else "no join tokens yet (make one with `stoker join-token create`)")


@join_token_group.command("revoke")
@click.argument("token_id")
@pass_cli
@run_async
async def revoke(cli: Cli, token_id: str) -> None:
    """Revoke a join token: no machine can join with it any more (those that joined stay)."""
    async with cli.connection() as (_nc, log):
        event = await revoke_join_token(log, token_id, nats_users(cli.settings.data_path, cli.topology))
    click.echo(f"join token {token_id} revoked" if event else f"join token {token_id} was already revoked", err=True)


def register(group: click.Group) -> None:
    """Add `stoker join-token`."""
    group.add_command(join_token_group)
