"""mDNS between two network namespaces on a veth pair the test makes: the platform's record is announced in one
and browsed in the other (ops.lan, `stoker discover`, a join whose token carries no address), and the goodbye
at shutdown removes it at once (the record's TTL is minutes: only a goodbye explains a removal within seconds).

Needs root and `ip` (iproute2); skipped with the reason otherwise. Nothing leaves the namespaces.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization

from contracts.base import utcnow
from eventstore.pki import ensure_ca, tls_dir
from ops.joining import new_user_seed
from ops.jointoken import JoinToken, encode_token

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 20.0


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@pytest.fixture
def namespaces():
    """Namespaces A (10.231.N.1 and .3) and B (10.231.N.2) joined by a veth pair; removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make network namespaces")
    tag = f"{os.getpid() % 100000}"
    a, b, net = f"stkA{tag}", f"stkB{tag}", f"10.231.{os.getpid() % 250}"
    made = _ip("netns", "add", a)
    if made.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {made.stderr.strip()}")
    try:
        steps = [("netns", "add", b), ("link", "add", f"va{tag}", "type", "veth", "peer", "name", f"vb{tag}"),
                 ("link", "set", f"va{tag}", "netns", a), ("link", "set", f"vb{tag}", "netns", b),
                 ("-n", a, "addr", "add", f"{net}.1/24", "dev", f"va{tag}"),
                 ("-n", a, "addr", "add", f"{net}.3/24", "dev", f"va{tag}"),
                 ("-n", b, "addr", "add", f"{net}.2/24", "dev", f"vb{tag}"),
                 ("-n", a, "link", "set", f"va{tag}", "up"), ("-n", b, "link", "set", f"vb{tag}", "up")]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the veth pair ({' '.join(step)}): {done.stderr.strip()}")
        yield a, b, f"{net}.1", f"{net}.3"
    finally:
        _ip("netns", "del", a)
        _ip("netns", "del", b)


class Peer:
    """tests/integration/mdns_peer.py in a namespace, its output read line by line with bounded waits."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, namespace: str, *args: str) -> Peer:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return cls(await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", namespace, sys.executable, "-m", *args, cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, stdin=asyncio.subprocess.DEVNULL))

    async def line(self, *words: str, timeout: float = WAIT_S) -> str:
        """The rest of the next line that starts with one of `words` (log lines and others skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"the peer ended before saying {' or '.join(words)}")
                text = raw.decode().strip()
                head, _, rest = text.partition(" ")
                if head in words:
                    return text if len(words) > 1 else rest

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await asyncio.wait_for(self.proc.wait(), 10)


@pytest_asyncio.fixture
async def peers() -> AsyncIterator[list[Peer]]:
    started: list[Peer] = []
    yield started
    for peer in started:
        await peer.stop()


def join_token(folder: Path, urls: tuple[str, ...]) -> tuple[Path, str]:
    """A signed join token of platform P-LAN under a CA made in `folder` (tls/ca.pem), written to a file; and the
    CA's fingerprint."""
    ca, key = ensure_ca(folder)
    der = ca.public_bytes(serialization.Encoding.DER)
    expires = int((utcnow() + timedelta(hours=1)).timestamp())
    token = JoinToken(platform_id="P-LAN", prefix="stoker", token_id="T1", urls=urls, ca_der=der,
                      ca_sha256=hashlib.sha256(der).digest(), expires_at=expires, labels=(), seed=new_user_seed())
    path = folder / "token.txt"
    path.write_text(encode_token(token, key))
    return path, token.fingerprint


async def test_announce_browse_join_and_goodbye_across_namespaces(namespaces, peers, tmp_path) -> None:
    a, b, address, later = namespaces
    (tmp_path / "ours").mkdir()
    (tmp_path / "other").mkdir()
    ours, fingerprint = join_token(tmp_path / "ours", ())
    stale, _ = join_token(tmp_path / "other", ("tls://10.231.255.9:4222",))  # another CA: mDNS must not match it

    browser = await Peer.start(b, "tests.integration.mdns_peer", "browse")
    peers.append(browser)
    ca_file = str(tls_dir(tmp_path / "ours") / "ca.pem")
    announcer = await Peer.start(a, "tests.integration.mdns_peer", "announce", ca_file, address, later)
    peers.append(announcer)
    said = await announcer.line("announced", "blocked", "silent")
    assert said != "silent", "discovery's LAN part announced nothing"
    if said == "blocked":
        pytest.skip("multicast is blocked even between these namespaces (zeroconf could not start)")
    found = json.loads(await browser.line("found"))
    assert found["addresses"] == [address]
    assert found["announcement"] == {"platform_id": "P-LAN", "nats_urls": [f"tls://{address}:4222"],
                                     "gateway_url": f"http://{address}:8000", "ca_fingerprint": fingerprint,
                                     "prefix": "stoker"}

    listed = await asyncio.to_thread(
        subprocess.run, ["ip", "netns", "exec", b, sys.executable, "-m", "ops", "--data-dir", str(tmp_path / "d"),
                         "--json", "discover", "--timeout", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert listed.returncode == 0, listed.stderr
    assert [p["platform_id"] for p in json.loads(listed.stdout)] == ["P-LAN"]

    join = await Peer.start(b, "tests.integration.mdns_peer", "join-urls", str(ours))
    fallback = await Peer.start(b, "tests.integration.mdns_peer", "join-urls", str(stale), "--discover")
    peers += [join, fallback]
    assert json.loads(await join.line("urls")) == [f"tls://{address}:4222"]  # a token without an address
    assert "using the address in the token" in await fallback.line("note")
    assert json.loads(await fallback.line("urls")) == ["tls://10.231.255.9:4222"]

    announcer.proc.send_signal(signal.SIGUSR1)  # a new address: discovery records it and updates the record
    async with asyncio.timeout(WAIT_S):
        while (moved := json.loads(await browser.line("found")))["announcement"]["nats_urls"] != [f"tls://{later}:4222"]:
            pass
    assert moved["addresses"] == [later]  # the old address was said goodbye to, not left in the caches

    announcer.proc.send_signal(signal.SIGTERM)
    assert await announcer.line("withdrawn", "blocked") == "withdrawn"
    assert await browser.line("removed") == "P-LAN._stoker._tcp.local."


@pytest.fixture
def cut_off():
    """A network namespace with nothing in it but a loopback that is down: no interface allows multicast."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to make network namespaces")
    name = f"stkE{os.getpid() % 100000}"
    made = _ip("netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {made.stderr.strip()}")
    try:
        yield name
    finally:
        _ip("netns", "del", name)


async def test_where_multicast_is_blocked_each_side_says_so_in_one_line(cut_off, peers, tmp_path) -> None:
    ours, _fingerprint = join_token(tmp_path, ("tls://10.231.255.9:4222",))
    announcer = await Peer.start(cut_off, "tests.integration.mdns_peer", "announce",
                                 str(tls_dir(tmp_path) / "ca.pem"), "192.168.77.20", "192.168.77.37")
    join = await Peer.start(cut_off, "tests.integration.mdns_peer", "join-urls", str(ours), "--discover")
    peers += [announcer, join]
    assert await announcer.line("announced", "blocked", "silent") == "blocked"  # the platform goes on without
    assert "multicast blocked" in await join.line("note")
    assert json.loads(await join.line("urls")) == ["tls://10.231.255.9:4222"]  # the token's address
    listed = await asyncio.to_thread(
        subprocess.run, ["ip", "netns", "exec", cut_off, sys.executable, "-m", "ops", "--data-dir",
                         str(tmp_path / "d"), "discover", "--timeout", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert listed.returncode == 1 and len(listed.stderr.strip().splitlines()) == 1
    assert "multicast blocked" in listed.stderr
