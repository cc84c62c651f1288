"""The firewall backends for real: two network namespaces on a veth pair, a default-drop policy in the first.

A listener in namespace A stands in for the gateway; a client in B reaches it only after `apply` and not after
`remove`, a rule the test added by hand stays, and a rule wiped behind stoker's back shows in `status` and
comes back with `apply`. The backend runs inside A (`ip netns exec`), as `python -m services.firewall`; with a
platform's nats-server in A too, what it did is in the event log.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contracts.subjects import Topology
from eventstore.credentials import CredentialStore
from eventstore.server import NatsServer, ServerSpec, find_nats_server, write_record

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_PORT, HAND_PORT = 8000, 2222
pytestmark = pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0 or shutil.which("ip") is None,
                                reason="network namespaces need root and iproute2 (`ip`)")

SERVER = r"""
import select, socket, sys, time
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16); socks.append(s)
print("ready", flush=True)
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    ready, _, _ = select.select(socks, [], [], 1.0)
    for s in ready:
        conn, _ = s.accept(); conn.sendall(b"ok"); conn.close()
"""
CLIENT = r"""
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0) as c:
        print(c.recv(2).decode())
except OSError as exc:
    print(f"blocked: {exc}")
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Pair:
    server_ns: str
    client_ns: str
    server_ip: str
    subnet: str

    def in_server(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.server_ns, *argv, check=check)

    def reaches(self, port: int) -> bool:
        out = sh("ip", "netns", "exec", self.client_ns, sys.executable, "-c", CLIENT, self.server_ip, str(port))
        return out.stdout.strip() == "ok"

    def firewall(self, action: str, backend: str, *, as_user: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        """`python -m services.firewall ACTION` inside the server's namespace (as another user with `as_user`)."""
        env = {**os.environ, "PYTHONPATH": str(ROOT), "STOKER_DATA_DIR": "/nonexistent-stoker-test"}
        return subprocess.run(["ip", "netns", "exec", self.server_ns, *as_user, sys.executable, "-m",
                               "services.firewall", action, "--backend", backend,
                               "--listen", f"gateway=0.0.0.0:{GATEWAY_PORT}", "--listen", "nats=127.0.0.1:4222",
                               "--source", self.subnet, "--no-record"],
                              capture_output=True, text=True, timeout=60, env=env, cwd=ROOT, check=False)

    def stoker(self, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
        """The `stoker` CLI inside the server's namespace, its gateway configured to listen on every address."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        env.update(PYTHONPATH=str(ROOT), STOKER_DATA_DIR=str(data_dir), STOKER_GATEWAY_HOST="0.0.0.0",
                   STOKER_GATEWAY_PORT=str(GATEWAY_PORT))
        return subprocess.run(["ip", "netns", "exec", self.server_ns, sys.executable, "-m", "ops", *args],
                              capture_output=True, text=True, timeout=60, env=env, cwd=data_dir, check=False)


@pytest.fixture
def pair() -> Iterator[Pair]:
    tag = f"{os.getpid() % 10000}{random.randrange(100)}"
    server_ns, client_ns = f"stkfw-a{tag}", f"stkfw-b{tag}"
    net = random.randrange(1, 250)
    made: list[str] = []
    listener = None
    try:
        for ns in (server_ns, client_ns):
            if sh("ip", "netns", "add", ns, check=False).returncode != 0:
                pytest.skip(f"cannot make a network namespace here ({ns})")
            made.append(ns)
        sh("ip", "link", "add", "stkfw0", "netns", server_ns, "type", "veth", "peer", "name", "stkfw1", "netns",
           client_ns)
        for ns, dev, host in ((server_ns, "stkfw0", 1), (client_ns, "stkfw1", 2)):
            sh("ip", "-n", ns, "addr", "add", f"10.231.{net}.{host}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        listener = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER,
                                     str(GATEWAY_PORT), str(HAND_PORT)], stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        yield Pair(server_ns, client_ns, f"10.231.{net}.1", f"10.231.{net}.0/24")
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(10)
        for ns in made:  # deleting a namespace takes its veth end, its rules and its sockets with it
            sh("ip", "netns", "del", ns, check=False)


def nft_ruleset(pair: Pair) -> str:
    return pair.in_server("nft", "list", "ruleset").stdout


def test_nftables_opens_only_after_apply_and_not_after_remove(pair: Pair, tmp_path: Path) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft (nftables) is not installed")
    hand = f"tcp dport {HAND_PORT} accept"
    host_ruleset = tmp_path / "host.nft"  # the host's own configuration, as /etc/nftables.conf would hold it
    host_ruleset.write_text("flush ruleset\ntable inet testfw {\n  chain input {\n"
                            "    type filter hook input priority 0; policy drop;\n"
                            f"    ct state established,related accept\n    {hand}\n  }}\n}}\n")
    pair.in_server("nft", "-f", str(host_ruleset))
    assert pair.reaches(HAND_PORT) and not pair.reaches(GATEWAY_PORT)
    assert pair.firewall("status", "nftables").returncode == 1

    # Without root: the exact commands are printed for a person to run, and nothing changes.
    if shutil.which("setpriv"):
        nobody = pair.firewall("apply", "nftables", as_user=("setpriv", "--reuid=65534", "--regid=65534",
                                                             "--clear-groups"))
        assert nobody.returncode == 4 and "needs root" in nobody.stderr, nobody.stderr + nobody.stdout
        assert (f"nft insert rule inet filter input ip saddr {pair.subnet} tcp dport {GATEWAY_PORT} counter accept "
                "comment '\"stoker gateway\"'") in nobody.stdout
        assert not pair.reaches(GATEWAY_PORT)

    # `stoker firewall apply`: the CLI reads the listeners from the settings and runs the firewall service.
    applied = pair.stoker(tmp_path, "firewall", "apply", "--backend", "nftables", "--source", pair.subnet,
                          "--no-record")
    assert applied.returncode == 0, applied.stderr + applied.stdout
    assert f"gateway 0.0.0.0:{GATEWAY_PORT}" in applied.stdout
    assert pair.reaches(GATEWAY_PORT) and pair.reaches(HAND_PORT)
    status = pair.firewall("status", "nftables")
    assert status.returncode == 0 and f"open     gateway {GATEWAY_PORT}/tcp from {pair.subnet}" in status.stdout
    assert "4222" not in nft_ruleset(pair)  # NATS listens on loopback: nothing opened for it
    again = pair.firewall("apply", "nftables")
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert nft_ruleset(pair).count("stoker gateway") == 1

    # A reload of the host's configuration (`systemctl reload nftables`: flush, load) wipes stoker's rule: status
    # says so, and apply puts it back.
    pair.in_server("nft", "-f", str(host_ruleset))
    wiped = pair.firewall("status", "nftables")
    assert wiped.returncode == 1 and "MISSING" in wiped.stdout and not pair.reaches(GATEWAY_PORT)
    assert pair.firewall("apply", "nftables").returncode == 0 and pair.reaches(GATEWAY_PORT)

    removed = pair.firewall("remove", "nftables")
    assert removed.returncode == 0, removed.stderr + removed.stdout
    assert not pair.reaches(GATEWAY_PORT) and pair.reaches(HAND_PORT)
    ruleset = nft_ruleset(pair)
    assert "stoker" not in ruleset and hand in ruleset and "policy drop" in ruleset


def test_iptables_opens_only_after_apply_and_not_after_remove(pair: Pair) -> None:
    if shutil.which("iptables") is None:
        pytest.skip("iptables is not installed")
    if pair.in_server("iptables", "-S", check=False).returncode != 0:
        pytest.skip("iptables cannot run in a network namespace here")
    pair.in_server("iptables", "-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
    pair.in_server("iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(HAND_PORT), "-j", "ACCEPT")
    pair.in_server("iptables", "-P", "INPUT", "DROP")
    assert pair.reaches(HAND_PORT) and not pair.reaches(GATEWAY_PORT)

    applied = pair.firewall("apply", "iptables")
    assert applied.returncode == 0, applied.stderr + applied.stdout
    assert pair.reaches(GATEWAY_PORT)
    assert pair.firewall("status", "iptables").returncode == 0
    assert pair.in_server("iptables", "-S", "INPUT").stdout.count("-j stoker") == 1

    removed = pair.firewall("remove", "iptables")
    assert removed.returncode == 0, removed.stderr + removed.stdout
    assert not pair.reaches(GATEWAY_PORT) and pair.reaches(HAND_PORT)
    rules = pair.in_server("iptables", "-S").stdout
    assert "stoker" not in rules and f"--dport {HAND_PORT} -j ACCEPT" in rules and "-P INPUT DROP" in rules


READ_EVENTS = r"""
import asyncio, sys
from contracts.subjects import Topology
from eventstore.connect import connect
from eventstore.log import JetStreamLog

async def main():
    url, admin, prefix, command = sys.argv[1:5]
    for _ in range(100):  # the server was just started in this namespace
        try:
            nc = await connect(url, "test", credentials=admin, reconnect=False)
            break
        except Exception:
            await asyncio.sleep(0.2)
    log = JetStreamLog(nc, Topology(prefix))
    if command == "streams":
        await log.ensure_streams()
    else:
        events, _ = await log.load("firewall", "h1")
        print(" ".join(f"{type(e.event).__name__}:{len(e.event.commands)}" for e in events))
    await nc.close()

asyncio.run(main())
"""


def test_apply_and_remove_are_recorded_by_the_admin(pair: Pair, tmp_path: Path) -> None:
    if shutil.which("nft") is None:
        pytest.skip("nft (nftables) is not installed")
    topology = Topology("tfwns")
    credentials = CredentialStore(tmp_path)
    credentials.ensure_control_plane()
    credentials.write_authorization(topology)
    node = NatsServer(ServerSpec(store_dir=tmp_path / "nats" / "jetstream", port=14222, http_port=18222,
                                 name="fwns", auth_file=credentials.authorization_path))
    conf = node.write_config()  # the namespace's own loopback: its ports are free whatever the host holds
    server = subprocess.Popen(["ip", "netns", "exec", pair.server_ns, find_nats_server(), "-c", str(conf)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        write_record(tmp_path, node, "nats://127.0.0.1:14222", pid=server.pid)
        admin = str(credentials.role_path("admin"))
        env = ["env", f"PYTHONPATH={ROOT}", f"STOKER_DATA_DIR={tmp_path}", f"STOKER_PREFIX={topology.prefix}"]
        read = [*env, sys.executable, "-c", READ_EVENTS, "nats://127.0.0.1:14222", admin, topology.prefix]
        pair.in_server(*read, "streams")
        pair.in_server("nft", "add", "table", "inet", "testfw")
        pair.in_server("nft", "add", "chain", "inet", "testfw", "input",
                       "{ type filter hook input priority 0; policy drop; }")
        pair.in_server("nft", "add", "rule", "inet", "testfw", "input", "iif", "lo", "accept")  # NATS is there
        for action in ("apply", "remove"):
            done = pair.in_server(*env, sys.executable, "-m", "services.firewall", action, "--backend", "nftables",
                                  "--host-id", "h1", "--listen", f"gateway=0.0.0.0:{GATEWAY_PORT}", "--source",
                                  pair.subnet, check=False)
            assert done.returncode == 0 and "not recorded" not in done.stderr, done.stderr + done.stdout
        assert pair.in_server(*read, "events").stdout.split() == ["FirewallApplied:1", "FirewallRemoved:1"]
    finally:
        server.kill()
        server.wait(10)
