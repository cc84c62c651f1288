"""Body of /api/v1/network/qr: the "Open on your phone" link."""

from __future__ import annotations

from datetime import datetime

from contracts.events import LanAddress
from gateway.schemas.common import Reply


class PhoneLinkView(Reply, kw_only=True):
    """This machine's LAN address and the link a phone opens (None, with `reason`, when there can be none)."""

    host: str
    preferred: str | None = None  # the address the link uses (services/discovery/network.py: the rule)
    addresses: list[LanAddress] = []  # every address, each skipped one saying why
    changed_at: datetime | None = None  # when discovery last recorded a change
    url: str | None = None  # the dashboard at the LAN address, signing in with a short-lived viewer token
    svg: str | None = None  # that URL as a QR code
    expires_at: datetime | None = None  # when the token in the link stops working
    reason: str = ""  # why there is no link (the gateway listens on loopback only, no address known yet)
