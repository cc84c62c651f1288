"""A machine's last recorded network (`NetworkChanged`, discovery's `network` aggregate), read back from the log."""

from __future__ import annotations

from contracts.events import NetworkChanged
from eventstore.ports import EventLog

AGGREGATE = "network"


async def last_network_change(event_log: EventLog, host: str) -> tuple[NetworkChanged | None, int]:
    """The host's latest NetworkChanged (None when none was recorded or it is malformed) and its version."""
    version = await event_log.subject_version(event_log.topology.events(AGGREGATE, host))
    if version == 0:
        return None, 0
    msg = await event_log.raw_at(version)
    stored = event_log.decode(msg) if msg is not None else None
    event = stored.event if stored is not None else None
    return (event if isinstance(event, NetworkChanged) else None), version
