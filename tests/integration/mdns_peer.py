"""One side of the mDNS test, run inside a network namespace: `announce` (as discovery does) or `browse` (as ops).

`announce FINGERPRINT ADDRESS`: announce platform P-LAN for NATS on 0.0.0.0:4222 at ADDRESS; print `announced`;
on SIGTERM withdraw (goodbye packets) and print `withdrawn`. `browse`: print `found <json>` for each platform
that answers and `removed <name>` when one says goodbye; runs until killed (the test bounds it).
`join-urls TOKEN_FILE [--discover]`: print where a join with that token would connect (`urls <json>`), the
notes on the way (`note …`), or `refused …`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import msgspec

from contracts.events import LanAddress
from ops.joined import platform_urls
from ops.jointoken import InvalidJoinToken, decode_token
from ops.lan import Browser
from services.discovery import network
from services.discovery.mdns import Announcer
from services.discovery.settings import DiscoverySettings


def say(text: str) -> None:
    print(text, flush=True)


async def announce(fingerprint: str, address: str) -> None:
    settings = DiscoverySettings(nats_listen="0.0.0.0", nats_ports=(4222,), gateway_listen="0.0.0.0",
                                 gateway_port=8000, platform_id="P-LAN")
    view = network.View(addresses=(LanAddress(interface="veth0", address=address, family="ipv4"),),
                        preferred=address)
    planned = network.announcement(settings, view, fingerprint, "stoker")
    assert planned is not None
    announcer = Announcer(host="stoker-peer")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    say("announced" if await announcer.announce(*planned) else "blocked")
    await stop.wait()
    await announcer.withdraw()
    say("withdrawn")


async def browse() -> None:
    async with Browser() as browser:
        reported: dict[str, object] = {}
        while True:
            for name, found in browser.found.items():
                if reported.get(name) != found:
                    reported[name] = found
                    say("found " + json.dumps({"name": name, "addresses": list(found.addresses),
                                               "announcement": msgspec.to_builtins(found.announcement)}))
            for name in list(browser.removed):
                if name in reported:
                    del reported[name]
                    say(f"removed {name}")
            browser.changed.clear()
            await browser.changed.wait()


async def join_urls(text: str, discover: bool) -> None:
    """Where `stoker worker --join` would connect for this token (ops.joined.platform_urls), one line each."""
    token = decode_token(text)
    try:
        urls = await platform_urls(token, discover, lambda line: say(f"note {line}"), timeout_s=2.0)
    except InvalidJoinToken as exc:
        say(f"refused {exc}")
        return
    say("urls " + json.dumps(urls))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "announce":
        asyncio.run(announce(sys.argv[2], sys.argv[3]))
    elif mode == "join-urls":
        asyncio.run(join_urls(Path(sys.argv[2]).read_text(), sys.argv[3:] == ["--discover"]))
    else:
        asyncio.run(browse())
