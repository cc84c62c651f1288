"""The "Open on your phone" link: the gateway's LAN URL with a short-lived viewer token, as a QR code.

The URL uses the machine's preferred LAN address as discovery recorded it (`NetworkChanged`), not a
`.local` name: many phones cannot resolve mDNS names. A phone token is a viewer token that expires
within `phone_token_minutes` and never after the token of the person who asked for it, so showing the
panel never lengthens anyone's access; one is kept per asking token and reused until half its life is gone.
"""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime, timedelta
from typing import Any

import msgspec
import segno

from contracts.base import utcnow
from contracts.events import NetworkChanged
from contracts.network import host_id
from eventstore.network import last_network_change
from eventstore.pki import is_loopback, is_wildcard
from eventstore.ports import EventLog
from gateway.schemas.network import PhoneLinkView
from gateway.tokens import TokenRegistry, issue_token

PHONE_TOKEN_NAME = "phone (Open on your phone)"
CEILING_MARGIN = timedelta(seconds=2)


def lan_base_url(listen: str, port: int, preferred: str | None, public_url: str = "") -> tuple[str | None, str]:
    """Where a phone on the LAN reaches the gateway, or None with the reason it cannot. Pure."""
    if public_url:
        return public_url.rstrip("/"), ""
    if is_loopback(listen):
        return None, (f"the gateway listens on {listen} only: set [gateway] host = \"0.0.0.0\" "
                      "(STOKER_GATEWAY_HOST) to reach it from a phone")
    host = preferred if is_wildcard(listen) else listen.strip("[]")
    if not host:
        return None, "no usable LAN address is known for this machine yet"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}", ""


def login_url(base_url: str, token: str) -> str:
    """A dashboard link that signs in with `token` (the same `#token=` form as `stoker up`'s login link)."""
    return f"{base_url}/#token={token}"


def qr_svg(text: str) -> str:
    """The QR code of `text` as an inline SVG element (dark modules on a light square, 4 px a module)."""
    return segno.make(text, error="m").svg_inline(scale=4, border=4, title="Open stoker on your phone", dark="#111",
                                                  light="#fff")


class PhoneLink:
    """This machine's last recorded network, and the phone tokens handed out for it."""

    def __init__(self, event_log: EventLog, registry: TokenRegistry, listen: str, port: int, public_url: str = "",
                 token_minutes: float = 60.0, host: str | None = None) -> None:
        self.log, self.registry = event_log, registry
        self.listen, self.port, self.public_url = listen, port, public_url
        self.lifetime = timedelta(minutes=token_minutes)
        self.host = host or host_id(socket.gethostname())
        self.change: NetworkChanged | None = None
        self._tokens: dict[str, tuple[str, datetime]] = {}  # asking token id -> (phone token, its expiry)
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Read this host's last NetworkChanged from the log."""
        self.change, _ = await last_network_change(self.log, self.host)

    def on_event(self, event: Any) -> bool:
        """Take a NetworkChanged of this host; whether it was one."""
        if isinstance(event, NetworkChanged) and event.host == self.host:
            self.change = event
            return True
        return False

    async def _token_for(self, asker: str) -> tuple[str, datetime]:
        now = utcnow()
        record = self.registry.by_id.get(asker)
        ceiling = record.expires_at if record is not None and record.expires_at is not None else now + self.lifetime
        async with self._lock:
            kept = self._tokens.get(asker)
            if kept is not None and kept[1] - now > self.lifetime / 2:
                return kept
            # issue_token counts from its own clock, a moment later: a margin keeps the ceiling a ceiling.
            lifetime = min(self.lifetime, ceiling - now - CEILING_MARGIN)
            if lifetime <= timedelta(seconds=1):
                raise PermissionError("your own token is about to expire: sign in again first")
            event, secret = await issue_token(self.log, "viewer", PHONE_TOKEN_NAME, lifetime)
            assert event.expires_at is not None
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
            self._tokens[asker] = (secret, event.expires_at)
            return self._tokens[asker]

    async def view(self, asker: str) -> PhoneLinkView:
        """The panel's content for the holder of token `asker`: URL, SVG, addresses (or why there is no link)."""
        change = self.change
        base, reason = lan_base_url(self.listen, self.port, change.preferred if change else None, self.public_url)
        body = PhoneLinkView(host=self.host, preferred=change.preferred if change else None,
                             addresses=list(change.new) if change else [],
                             changed_at=change.changed_at if change else None, reason=reason)
        if base is None:
            return body
        secret, expires = await self._token_for(asker)
        url = login_url(base, secret)
        return msgspec.structs.replace(body, url=url, svg=qr_svg(url), expires_at=expires)
