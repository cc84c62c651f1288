"""The LAN names every part agrees on: a machine's host id and the platform's mDNS / DNS-SD record. Pure.

The control plane announces itself as `<platform id>._stoker._tcp.local.` (services/discovery/mdns.py); a
new machine, `stoker discover` and `stoker worker --join` browse for it (ops/lan.py). The TXT record says
where the platform is and which CA vouches for it; the CA fingerprint is only a hint for choosing among
several platforms: a joining machine trusts the CA its join token carries, never what a multicast answer says.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from contracts.base import ID_PATTERN

SERVICE_TYPE = "_stoker._tcp.local."
TXT_VERSION = "1"
MAX_TXT_VALUE = 250  # a TXT string is at most 255 bytes, key and "=" included
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")

Url = Annotated[str, msgspec.Meta(pattern=r"^(tls|nats|https?)://[^\s,]{1,200}$")]


def host_id(hostname: str) -> str:
    """A host name as an aggregate id: its first label, with anything but letters, digits, '-' and '_' as '-'."""
    head = _NOT_ID.sub("-", hostname.split(".")[0])[:64].strip("-")
    return head or "host"


class Announcement(msgspec.Struct, frozen=True, kw_only=True):
    """What the control plane tells the LAN about itself (the TXT record of its DNS-SD service)."""

    platform_id: Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
    nats_urls: tuple[Url, ...] = ()
    gateway_url: Url | None = None  # None: the gateway listens on this machine's loopback only
    ca_fingerprint: Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{64})?$")] = ""
    prefix: Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,31}$")] = "stoker"


def instance_name(platform_id: str) -> str:
    """The DNS-SD instance name of a platform's service."""
    return f"{platform_id}.{SERVICE_TYPE}"


def txt_record(announcement: Announcement) -> dict[str, str]:
    """The TXT key/value pairs: `v`, `id`, `prefix`, `ca`, `gw` and `nats` (as many URLs as fit one string)."""
    urls: list[str] = []
    for url in announcement.nats_urls:
        if len(",".join([*urls, url])) > MAX_TXT_VALUE:
            break
        urls.append(url)
    out = {"v": TXT_VERSION, "id": announcement.platform_id, "prefix": announcement.prefix,
           "ca": announcement.ca_fingerprint, "nats": ",".join(urls)}
    if announcement.gateway_url:
        out["gw"] = announcement.gateway_url
    return out


def parse_txt(properties: dict[bytes, bytes | None]) -> Announcement:
    """The announcement in a TXT record; ValueError (one line) for anything that is not one of ours."""
    text = {k.decode(errors="replace"): (v or b"").decode(errors="replace") for k, v in properties.items()}
    if text.get("v") != TXT_VERSION:
        raise ValueError(f"not a stoker record of version {TXT_VERSION} (v={text.get('v')!r})")
    try:
        return msgspec.convert({"platform_id": text.get("id", ""), "prefix": text.get("prefix") or "stoker",
                                "ca_fingerprint": text.get("ca", ""), "gateway_url": text.get("gw") or None,
                                "nats_urls": [u for u in text.get("nats", "").split(",") if u]}, Announcement)
    except msgspec.ValidationError as exc:
        raise ValueError(f"a malformed stoker record: {exc}") from None
