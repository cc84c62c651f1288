"""`stoker token create|list|revoke`: API tokens, written as events straight to the log."""

from __future__ import annotations

import re
from datetime import timedelta

import click

from contracts.base import utcnow
from gateway.bootstrap import admin_token_path
from gateway.tokens import ROLES, issue_token, load_registry, revoke_token
from ops.cli import Cli, pass_cli, run_async
from ops.output import emit_json, table

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d` → a timedelta; ValueError otherwise."""
    match = _DURATION.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 12h or 30d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


@click.group("token")
def token_group() -> None:
    """API tokens for the gateway (roles: admin, operator, viewer)."""


@token_group.command("create")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@click.option("--name", default="", help="What the token is for.")
@click.option("--expires-in", help="Lifetime such as 12h or 30d (default: until revoked).")
@pass_cli
@run_async
async def create(cli: Cli, role: str, name: str, expires_in: str | None) -> None:
    """Issue a token; its secret is printed this once and stored nowhere."""
    expires = parse_duration(expires_in) if expires_in else None
    async with cli.connection() as (_nc, log):
        event, secret = await issue_token(log, role, name, expires)  # type: ignore[arg-type]
    if cli.as_json:
        emit_json({"token_id": event.token_id, "token": secret, "role": role, "name": name,
                   "expires_at": event.expires_at})
        return
    click.echo(secret)
    until = f", expires {event.expires_at:%Y-%m-%d %H:%M} UTC" if event.expires_at else ""
    click.echo(f"token {event.token_id} ({role}{until}); shown once: store it now", err=True)


@token_group.command("list")
@pass_cli
@run_async
async def list_tokens(cli: Cli) -> None:
    """Every token issued, without secrets."""
    async with cli.connection() as (_nc, log):
        registry = await load_registry(log)
    now = utcnow()
    records = registry.records()
    if cli.as_json:
        emit_json([{"token_id": r.token_id, "role": r.role, "name": r.name, "issued_at": r.issued_at,
                    "expires_at": r.expires_at, "revoked_at": r.revoked_at, "active": r.active(now)}
                   for r in records])
        return
    rows = [(r.token_id, r.role, "active" if r.active(now) else ("revoked" if r.revoked_at else "expired"),
             f"{r.issued_at:%Y-%m-%d %H:%M}", f"{r.expires_at:%Y-%m-%d %H:%M}" if r.expires_at else "-", r.name)
            for r in records]
    click.echo(table(rows, ["id", "role", "state", "issued", "expires", "name"]))
    click.echo(f"admin token file: {admin_token_path(cli.settings.data_path)}", err=True)


@token_group.command("revoke")
@click.argument("token_id")
@pass_cli
@run_async
async def revoke(cli: Cli, token_id: str) -> None:
    """Revoke a token; the gateway refuses it (and closes its sockets) within a moment."""
    async with cli.connection() as (_nc, log):
        event = await revoke_token(log, token_id)
    click.echo(f"token {token_id} revoked" if event else f"token {token_id} was already revoked", err=True)


def register(group: click.Group) -> None:
    """Add `stoker token`."""
    group.add_command(token_group)
