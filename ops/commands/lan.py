"""`stoker discover` (platforms on the LAN, by mDNS) and `stoker qr` (a fresh phone link as a QR code)."""

from __future__ import annotations

import socket

import click

from contracts.network import host_id
from eventstore.network import last_network_change
from eventstore.pki import short_fingerprint
from gateway.phone import lan_base_url, login_url
from gateway.settings import load as load_gateway_settings
from gateway.tokens import issue_token
from ops.cli import Cli, pass_cli, run_async
from ops.commands.tokens import parse_duration
from ops.jointoken import qr_text
from ops.lan import MulticastBlocked, browse
from ops.output import emit_json, table


@click.command("discover")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.5, max=60), default=3.0, show_default=True,
              help="Seconds to listen for answers.")
@pass_cli
@run_async
async def discover(cli: Cli, timeout_s: float) -> None:
    """Platforms that announce themselves on this LAN (mDNS `_stoker._tcp.local.`)."""
    try:
        found = await browse(timeout_s)
    except MulticastBlocked as exc:
        raise click.ClickException(f"{exc}; join with the address in a join token instead") from None
    if cli.as_json:
        emit_json([{"name": f.name, "addresses": list(f.addresses), **_fields(f.announcement)} for f in found])
        return
    if not found:
        click.echo(f"no stoker platform answered within {timeout_s:g} s (a platform announces itself only "
                   "while its NATS listens beyond loopback: `stoker up --listen 0.0.0.0`)", err=True)
        return
    rows = [(f.announcement.platform_id, ",".join(f.announcement.nats_urls), f.announcement.gateway_url or "-",
             short_fingerprint(f.announcement.ca_fingerprint) or "-") for f in found]
    click.echo(table(rows, ["platform", "nats", "gateway", "ca"]))


def _fields(announcement) -> dict:
    return {"platform_id": announcement.platform_id, "nats_urls": list(announcement.nats_urls),
            "gateway_url": announcement.gateway_url, "ca_fingerprint": announcement.ca_fingerprint,
            "prefix": announcement.prefix}


@click.command("qr")
@click.option("--role", type=click.Choice(["viewer", "operator"]), default="viewer", show_default=True,
              help="What the phone may do.")
@click.option("--expires", default="1h", show_default=True, help="Lifetime of the link, such as 15m, 1h or 1d.")
@pass_cli
@run_async
async def qr(cli: Cli, role: str, expires: str) -> None:
    """A fresh dashboard link for a phone on the LAN, with a token of its own, as a QR code."""
    try:
        lifetime = parse_duration(expires)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None
    gateway = load_gateway_settings().gateway
    async with cli.connection() as (_nc, log):
        change, _ = await last_network_change(log, host_id(socket.gethostname()))
        base, reason = lan_base_url(gateway.host, gateway.port, change.preferred if change else None,
                                    gateway.public_url)
        if base is None:
            raise click.ClickException(f"no phone link: {reason}")
        event, secret = await issue_token(log, role, f"phone ({role}, stoker qr)", lifetime)  # type: ignore[arg-type]
    url = login_url(base, secret)
    if cli.as_json:
        emit_json({"url": url, "token_id": event.token_id, "role": role, "expires_at": event.expires_at})
        return
    click.echo(url)
    click.echo(qr_text(url), nl=False)
    click.echo(f"token {event.token_id} ({role}, expires {event.expires_at:%Y-%m-%d %H:%M} UTC); "
               f"`stoker token revoke {event.token_id}` ends it sooner", err=True)


def register(group: click.Group) -> None:
    """Add `stoker discover` and `stoker qr`."""
    group.add_command(discover)
    group.add_command(qr)
