"""Finding platforms on the LAN by mDNS / DNS-SD (`_stoker._tcp.local.`): `stoker discover`, `stoker worker --join`.

A record says where a platform is; it proves nothing (anyone on the LAN can answer). A joining machine
uses it only for the address and still pins the CA its join token carries; the fingerprint in the
record only picks the right platform among several.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import NamedTuple

from contracts.network import SERVICE_TYPE, Announcement, parse_txt
from eventstore.observability import get_logger

log = get_logger(component="lan")
QUERY_TIMEOUT_MS = 3000


class MulticastBlocked(RuntimeError):
    """mDNS cannot be used here (no interface allows multicast); the message says so in one line."""


class Found(NamedTuple):
    """A platform that answered: its DNS-SD name, what it announced, and the addresses of its record."""

    name: str
    announcement: Announcement
    addresses: tuple[str, ...]


class Browser:
    """Browses `_stoker._tcp.local.` while open: `found` by name, `removed` names, `changed` set on each news."""

    def __init__(self, interfaces: list[str] | None = None) -> None:
        self.interfaces = interfaces
        self.found: dict[str, Found] = {}
        self.removed: set[str] = set()
        self.changed = asyncio.Event()
        self._zc = None
        self._browser = None
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> Browser:
        from zeroconf import InterfaceChoice
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        try:
            self._zc = AsyncZeroconf(interfaces=self.interfaces or InterfaceChoice.All)
            self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_change])
        except (OSError, RuntimeError) as exc:
            await self._close()
            raise MulticastBlocked(f"mDNS is not available here (multicast blocked: {exc})") from None
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
        if self._zc is not None:
            with contextlib.suppress(Exception):
                await self._zc.async_close()
        self._browser = self._zc = None

    def _on_change(self, zeroconf, service_type: str, name: str, state_change) -> None:
        from zeroconf import ServiceStateChange

        if state_change is ServiceStateChange.Removed:
            self.found.pop(name, None)
            self.removed.add(name)
            self.changed.set()
            return
        task = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        from zeroconf.asyncio import AsyncServiceInfo

        info = AsyncServiceInfo(service_type, name)
        if self._zc is None or not await info.async_request(self._zc.zeroconf, QUERY_TIMEOUT_MS):
            return
        try:
            announcement = parse_txt(info.properties)
        except ValueError as exc:
            log.info("ignoring an mDNS record", name=name, reason=str(exc))
            return
        self.removed.discard(name)
        self.found[name] = Found(name, announcement, tuple(info.parsed_scoped_addresses()))
        self.changed.set()

    async def wait_until(self, condition: Callable[[Browser], bool], timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until `condition(self)` holds; whether it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition(self):
            left = deadline - loop.time()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return True


async def browse(timeout_s: float, platform_id: str | None = None, fingerprint: str | None = None,
                 interfaces: list[str] | None = None) -> list[Found]:
    """The platforms that answer within `timeout_s` (only the one with this id and CA fingerprint, when given:
    then it returns as soon as that one answered). MulticastBlocked where mDNS cannot be used."""
    def wanted(found: Found) -> bool:
        a = found.announcement
        return (platform_id is None or a.platform_id == platform_id) and (
            fingerprint is None or a.ca_fingerprint == fingerprint)

    async with Browser(interfaces) as browser:
        if platform_id is not None:
            await browser.wait_until(lambda b: any(wanted(f) for f in b.found.values()), timeout_s)
        else:
            await asyncio.sleep(timeout_s)
        return sorted((f for f in browser.found.values() if wanted(f)), key=lambda f: f.name)
