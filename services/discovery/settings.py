"""Discovery settings: `[discovery]` in stoker.toml, or STOKER_DISCOVERY_<FIELD> variables."""

from __future__ import annotations

from typing import Annotated

import msgspec

Seconds = Annotated[float, msgspec.Meta(gt=0)]


class DiscoverySettings(msgspec.Struct, frozen=True, kw_only=True):
    """Heartbeat pace and how long silence lasts before a worker is lost, then forgotten."""

    heartbeat_s: Seconds = 2.0  # what workers are expected to keep to (they read their own setting)
    lost_after_s: Seconds = 10.0
    forget_after_s: Seconds = 300.0
    lease_ttl_s: Seconds = 3.0
    tick_s: Seconds = 0.5  # how often silence is checked

