"""One side of the mDNS test, run inside a network namespace: `announce` (as discovery does) or `browse` (as ops).

`announce CA_FILE ADDRESS LATER`: discovery's LanPresence announces platform P-LAN (NATS on 0.0.0.0:4222) at
ADDRESS, print `announced`; SIGUSR1 moves the machine to LATER; on SIGTERM it withdraws (goodbye packets) and
prints `withdrawn`. `browse`: print `found <json>` for each platform
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

from contracts.subjects import Topology
from eventstore.follow import cancel_and_wait
from eventstore.memory import MemoryLog
from ops.joined import platform_urls
from ops.jointoken import InvalidJoinToken, decode_token
from ops.lan import Browser
from services.discovery.lan import LanPresence
from services.discovery.mdns import Announcer
from services.discovery.network import Interface
from services.discovery.settings import DiscoverySettings


def say(text: str) -> None:
    print(text, flush=True)


async def announce(ca_file: str, address: str, later: str) -> None:
    """The acting discovery's LAN part as it runs (LanPresence: watch, record, announce) on a log in memory; its
    interface source reports `address`, and `later` after SIGUSR1."""
    settings = DiscoverySettings(nats_listen="0.0.0.0", nats_ports=(4222,), gateway_listen="0.0.0.0",
                                 gateway_port=8000, platform_id="P-LAN", network_check_s=0.2)
    current = [address]
    event_log = MemoryLog(Topology("stoker"))
    await event_log.ensure_streams()
    presence = LanPresence(event_log, settings, lambda: [Interface(name="eth0", addresses=(current[0],))], ca_file,
                           Announcer(host="stoker-peer"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: current.__setitem__(0, later))
    task = asyncio.create_task(presence.run())
    await presence.checked.wait()
    say("blocked" if presence.announcer.failed else "announced" if presence.announcer.announced else "silent")
    await stop.wait()
    await cancel_and_wait([task])
    await presence.stop()
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
        asyncio.run(announce(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif mode == "join-urls":
        asyncio.run(join_urls(Path(sys.argv[2]).read_text(), sys.argv[3:] == ["--discover"]))
    else:
        asyncio.run(browse())
