"""`stoker up` on the LAN: the gateway's LAN URL and its QR code in the terminal, drawn again when the address changes.

The link is the dashboard login link of `stoker up` (the same short-lived viewer token) at the machine's
preferred LAN address, which discovery records as `NetworkChanged`; this follows those events.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from contracts.events import NetworkChanged
from contracts.network import host_id
from contracts.subjects import Topology
from eventstore.connect import connect
from eventstore.follow import follow_forever
from eventstore.log import JetStreamLog
from eventstore.network import AGGREGATE, last_network_change
from gateway.phone import lan_base_url, login_url
from gateway.settings import GatewaySettings
from ops.jointoken import qr_text


def phone_lines(change: NetworkChanged | None, gateway: GatewaySettings, token: str) -> str:
    """The terminal's lines: the link and its QR code, or why there is none yet."""
    base, reason = lan_base_url(gateway.host, gateway.port, change.preferred if change else None, gateway.public_url)
    if base is None:
        return f"  on your phone:     no link yet: {reason}"
    url = login_url(base, token)
    return f"  on your phone:     {url}  (scan:)\n{qr_text(url)}"


async def follow_phone_links(nats_url: str, credentials: str | None, ca_file: str | None, prefix: str,
                             gateway: GatewaySettings, token: str, write: Callable[[str], None]) -> None:
    """Print the link now and again at each change of this machine's preferred address (run as a task)."""
    nc = await connect(nats_url, "stoker-up-phone", credentials=credentials, ca_file=ca_file)
    try:
        event_log = JetStreamLog(nc, Topology(prefix))
        host = host_id(socket.gethostname())
        change, position = await last_network_change(event_log, host)
        write(phone_lines(change, gateway, token))
        shown = change.preferred if change else None

        def apply(msg) -> None:
            nonlocal position, shown
            position = msg.metadata.sequence.stream
            stored = event_log.decode(msg)
            event = stored.event if stored is not None else None
            if isinstance(event, NetworkChanged) and event.preferred != shown:
                write(f"stoker: this machine's LAN address changed ({shown or 'none'} → {event.preferred or 'none'}); "
                      "the phone link is now:\n" + phone_lines(event, gateway, token))
                shown = event.preferred

        await follow_forever(event_log, lambda: position, apply, name="phone-link",
                             filter_subject=event_log.topology.events(AGGREGATE, host))
    finally:
        await nc.close()
