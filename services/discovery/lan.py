"""This machine's addresses, read every few seconds; a change is appended as NetworkChanged. Thin.

The interface source is a parameter (`psutil_interfaces` by default) so a test can feed addresses
that come and go. Only the acting discovery watches, and it is the only writer of its host's
`network` aggregate, so an append that finds another version re-reads the log and decides again.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from contracts.base import utcnow
from contracts.events import NetworkChanged
from contracts.network import host_id
from eventstore.log import ConcurrencyError
from eventstore.network import AGGREGATE, last_network_change
from eventstore.observability import get_logger
from eventstore.pki import file_fingerprint
from eventstore.ports import EventLog
from services.discovery import network
from services.discovery.mdns import Announcer
from services.discovery.settings import DiscoverySettings

log = get_logger(component="discovery")
InterfaceSource = Callable[[], list[network.Interface]]


def psutil_interfaces() -> list[network.Interface]:
    """The interfaces as psutil sees them: name, up or down, IPv4 and IPv6 addresses."""
    import psutil

    stats = psutil.net_if_stats()
    families = (socket.AF_INET, socket.AF_INET6)
    return [network.Interface(name=name, up=stats[name].isup if name in stats else False,
                              addresses=tuple(a.address for a in addresses if a.family in families))
            for name, addresses in psutil.net_if_addrs().items()]


class NetworkWatch:
    """This host's recorded network: `check` reads the interfaces once and appends what changed."""

    def __init__(self, event_log: EventLog, source: InterfaceSource, host: str | None = None) -> None:
        self.log, self.source = event_log, source
        self.host = host or host_id(socket.gethostname())
        self.view: network.View | None = None
        self.version = 0

    async def load(self) -> None:
        """What the log says this host's network was."""
        last, self.version = await last_network_change(self.log, self.host)
        self.view = network.evolve(None, last) if last is not None else None

    async def check(self) -> list[NetworkChanged]:
        """Read the interfaces once; append the change, if any (re-reading the log after a conflict)."""
        now_view = network.observe(await asyncio.to_thread(self.source), self.view)
        changes = network.decide_change(self.host, self.view, now_view, utcnow())
        if changes:
            try:
                self.version = (await self.log.append(AGGREGATE, self.host, changes, self.version)).last_seq
            except ConcurrencyError:
                await self.load()  # another writer recorded something: decide again at the next check
                return []
            log.info("NetworkChanged", host=self.host, preferred=now_view.preferred, usable=sorted(now_view.usable))
        self.view = now_view
        return changes


class LanPresence:
    """The acting discovery on the LAN: watches the addresses and keeps the mDNS record in step with them."""

    def __init__(self, event_log: EventLog, settings: DiscoverySettings, source: InterfaceSource | None = None,
                 ca_file: str = "", announcer: Announcer | None = None) -> None:
        self.settings = settings
        self.watch = NetworkWatch(event_log, source or psutil_interfaces)
        self.prefix = event_log.topology.prefix
        self.ca_file = ca_file
        self.announcer = announcer or Announcer()
        self.checked = asyncio.Event()  # the first check is done

    async def run(self) -> None:
        """Check now and every `network_check_s` until cancelled; announce at the first check and each change."""
        await self.watch.load()
        first = True
        while True:
            try:
                changed = await self.watch.check()
                if (changed or first) and self.watch.view is not None:
                    await self._announce(self.watch.view)
                first = False
            except Exception as exc:  # the log or the interfaces failed this once: the next check tries again
                log.warning("network check failed", host=self.watch.host, error=repr(exc))
            self.checked.set()
            await asyncio.sleep(self.settings.network_check_s)

    async def _announce(self, view: network.View) -> None:
        fingerprint = file_fingerprint(self.ca_file) if self.ca_file else ""
        planned = network.announcement(self.settings, view, fingerprint, self.prefix)
        if planned is None:
            await self.announcer.withdraw()
            return
        announcement, addresses, port = planned
        await self.announcer.announce(announcement, addresses, port)

    async def stop(self) -> None:
        """Withdraw the record (goodbye packets)."""
        await self.announcer.withdraw()
