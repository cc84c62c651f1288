"""Discovery settings: `[discovery]` in stoker.toml, or STOKER_DISCOVERY_<FIELD> variables."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Seconds = Annotated[float, msgspec.Meta(gt=0)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class DiscoverySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Heartbeat pace and how long silence lasts before a worker is lost, then forgotten."""

    heartbeat_s: Seconds = 2.0  # what workers are expected to keep to (they read their own setting)
    lost_after_s: Seconds = 10.0
    forget_after_s: Seconds = 300.0
    lease_ttl_s: Seconds = 3.0
    tick_s: Seconds = 0.5  # how often silence is checked

    # --- LAN (issue 14): this machine's addresses and the mDNS record. `stoker up` sets the nats_* and
    # gateway_* fields to where it made NATS and the gateway listen; alone, discovery announces nothing.
    network_check_s: Annotated[float, msgspec.Meta(ge=0)] = 3.0  # how often the interfaces are read; 0: never
    mdns: Literal["auto", "off"] = "auto"  # auto: announce exactly when NATS listens beyond loopback
    nats_listen: str = "127.0.0.1"
    nats_ports: tuple[Port, ...] = ()
    nats_scheme: Literal["tls", "nats"] = "tls"
    gateway_listen: str = "127.0.0.1"
    gateway_port: Port = 0
    platform_id: str = ""
