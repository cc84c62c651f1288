"""The platform on the LAN: a DNS-SD service `<platform id>._stoker._tcp.local.` announced by mDNS. Thin.

Announced only while NATS listens beyond loopback (otherwise no other machine could use what it says:
secure by default, nothing is told to the LAN that the platform does not serve there), updated when
the addresses change, withdrawn with goodbye packets (TTL 0) when discovery stops or loses its lease.
Where multicast cannot be used (no interface allows it, a container without it) one warning says so
and the platform goes on without: machines join with the address in their join token.
"""

from __future__ import annotations

import socket

from contracts.network import SERVICE_TYPE, Announcement, instance_name, txt_record
from eventstore.observability import get_logger

log = get_logger(component="discovery")


def service_info(announcement: Announcement, addresses: list[str], port: int, host: str):
    """The zeroconf record of an announcement (A/AAAA for `addresses`, SRV to `port`, the TXT record)."""
    from zeroconf.asyncio import AsyncServiceInfo

    return AsyncServiceInfo(SERVICE_TYPE, instance_name(announcement.platform_id), port=port,
                            parsed_addresses=addresses, properties=txt_record(announcement),
                            server=f"{host}.local.")


class Announcer:
    """One mDNS responder for the platform's record; `announce` (re)publishes, `withdraw` says goodbye."""

    def __init__(self, host: str | None = None, interfaces: list[str] | None = None) -> None:
        self.host = host or socket.gethostname().split(".")[0]
        self.interfaces = interfaces  # None: every interface
        self._zc = None
        self._info = None
        self.failed = False

    @property
    def announced(self) -> bool:
        """Whether a record is published now."""
        return self._info is not None

    async def announce(self, announcement: Announcement, addresses: list[str], port: int) -> bool:
        """Publish (or update) the record; False, with one warning, when multicast cannot be used."""
        if self.failed:
            return False
        info = service_info(announcement, addresses, port, self.host)
        try:
            if self._zc is None:
                from zeroconf import InterfaceChoice
                from zeroconf.asyncio import AsyncZeroconf

                self._zc = AsyncZeroconf(interfaces=self.interfaces or InterfaceChoice.All)
            if self._info is not None and set(self._info.parsed_addresses()) != set(addresses):
                # An update would leave the old A/AAAA records in every cache until their TTL: say goodbye to
                # the whole record first, so nobody tries an address the machine no longer has.
                await (await self._zc.async_unregister_service(self._info))
                self._info = None
            if self._info is None:
                await (await self._zc.async_register_service(info, allow_name_change=False))
            else:
                await (await self._zc.async_update_service(info))
        except (OSError, RuntimeError) as exc:  # no interface zeroconf may use (RuntimeError), no socket: for good
            self.failed = True
            log.warning("mDNS unavailable: multicast is blocked here, so machines must join with the address in "
                        "their join token", error=repr(exc))
            await self._close()
            return False
        except Exception as exc:  # zeroconf.Error (the name is taken on the LAN, …): tried again at the next change
            log.warning("mDNS announcement failed", error=repr(exc))
            await self._close()
            self._info = None
            return False
        self._info = info
        log.info("announced on mDNS", name=info.name, addresses=addresses, port=port)
        return True

    async def withdraw(self) -> None:
        """Send goodbye packets for the record and stop answering."""
        if self._zc is not None and self._info is not None:
            try:
                await (await self._zc.async_unregister_service(self._info))
                log.info("withdrawn from mDNS", name=self._info.name)
            except (OSError, RuntimeError) as exc:
                log.warning("mDNS goodbye failed", error=repr(exc))
        self._info = None
        await self._close()

    async def _close(self) -> None:
        if self._zc is not None:
            zc, self._zc = self._zc, None
            try:
                await zc.async_close()
            except (OSError, RuntimeError):
                pass
