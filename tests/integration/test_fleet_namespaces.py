"""Three machines for real, on this one: network namespaces A, B and C on a bridge (10.232.0.0/24), a NATS node
in each as one cluster (TLS on clients and routes, the route password, the platform's users on every node: B's
and C's from node bundles), the control plane in A.

It shows what issue 10 asks of a fleet: a worker in B joins with a join token over TLS and runs a job; a client
in C without credentials, and a machine holding a token of another platform, are each refused with one line;
cutting B's link loses the worker (WorkerLost) and the job resumes in A from its checkpoint; the cluster loses
node C to SIGKILL and no acknowledged event is lost. Only addresses inside the namespaces made here; every wait
is bounded; everything is torn down at the end.

The test's own code runs in a thread that entered namespace A (`setns` changes one thread's namespace only),
so its NATS connections are A's; every process runs in its namespace through `ip netns exec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from contracts.base import new_id
from contracts.commands import JobAccepted, SubmitJob
from contracts.events import AlertRaised, JobCheckpointed, JobCompleted, JobRequeued, JobStarted, WorkerLost
from contracts.subjects import Topology
from eventstore import pki
from eventstore.connect import connect
from eventstore.credentials import CredentialStore
from eventstore.fleet import export_node, import_node, node_tls
from eventstore.log import JetStreamLog, StoredEvent
from eventstore.micro import call
from eventstore.server import NatsServer, find_nats_server, peer_node
from ops.joined import read_joined
from ops.joining import new_user_seed
from ops.jointoken import JoinToken, encode_token
from ops.runstate import read_state

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.232.0"
NODES = ("a", "b", "c")
ADDRESS = {name: f"{SUBNET}.{i}" for i, name in enumerate(NODES, start=1)}
CLIENT_PORT, CLUSTER_PORT, HTTP_PORT = 4222, 6222, 8222  # each namespace has its own ports
A_URL = f"tls://127.0.0.1:{CLIENT_PORT}"  # how A's own processes reach A's node
PREFIX = "fleet"
CLONE_NEWNET = 0x40000000
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="network namespaces are Linux's")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=check)


class Namespaces:
    """Namespaces a, b, c and a hub holding the bridge; each has one veth end with its address."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.tag = tag
        self.ns = {name: f"stk{tag}{name}" for name in (*NODES, "hub")}
        self.made: list[str] = []

    def up(self) -> None:
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        hub = self.ns["hub"]
        sh("ip", "-n", hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", hub, "link", "set", "br0", "up")
        for name in NODES:
            inside, outside = f"e{self.tag}{name}", self.hub_end(name)
            sh("ip", "link", "add", inside, "netns", self.ns[name], "type", "veth", "peer", "name", outside,
               "netns", hub)
            sh("ip", "-n", self.ns[name], "addr", "add", f"{ADDRESS[name]}/24", "dev", inside)
            sh("ip", "-n", self.ns[name], "link", "set", inside, "up")
            sh("ip", "-n", hub, "link", "set", outside, "master", "br0")
            sh("ip", "-n", hub, "link", "set", outside, "up")

    def hub_end(self, name: str) -> str:
        return f"h{self.tag}{name}"

    def cut(self, name: str) -> None:
        """A partition: the machine's cable is pulled (its end on the bridge goes down)."""
        sh("ip", "-n", self.ns["hub"], "link", "set", self.hub_end(name), "down")

    def mend(self, name: str) -> None:
        """The cable back in."""
        sh("ip", "-n", self.ns["hub"], "link", "set", self.hub_end(name), "up")

    def exec(self, name: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[name], *argv]

    def down(self) -> None:
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check=False)  # their veth pairs go with them
        self.made.clear()


def namespaces_or_skip() -> Namespaces:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("making network namespaces needs root and iproute2 (`ip`)")
    probe = f"stkprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if made.returncode != 0:
        pytest.skip(f"network namespaces cannot be made here: {made.stderr.strip()}")
    sh("ip", "netns", "del", probe, check=False)
    return Namespaces()


def in_namespace(ns: str, body: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    """Run `asyncio.run(body())` in a thread that entered network namespace `ns`; its result or its error."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {ns}")
            finally:
                os.close(fd)
            out["value"] = asyncio.run(asyncio.wait_for(body(), timeout))
        except BaseException as exc:  # handed to the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, name=f"in-{ns}", daemon=True)
    thread.start()
    thread.join(timeout + 15)
    if thread.is_alive():
        raise AssertionError(f"the test's code in {ns} did not end within {timeout + 15:g} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


class Fleet:
    """The machines' data dirs and processes."""

    def __init__(self, base: Path, net: Namespaces) -> None:
        self.base, self.net = base, net
        self.topology = Topology(PREFIX)
        self.data = {name: base / f"node-{name}" for name in NODES}
        self.procs: dict[str, subprocess.Popen] = {}
        self.nodes: dict[str, NatsServer] = {}
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def prepare(self) -> None:
        """A's credentials and CA, a worker credential for A's own worker, bundles for B and C imported
        there, and B's and C's node configurations from `peer_node`, as `stoker up --peer` writes them there."""
        a = self.data["a"]
        store = CredentialStore(a)
        store.ensure_control_plane()
        store.ensure_worker("wa")
        for name in ("b", "c"):
            bundle = export_node(a, self.topology, f"node-{name}", [ADDRESS[name]])
            assert import_node(self.data[name], bundle) == (f"node-{name}", f"node-{name}")
            own = CredentialStore(self.data[name])
            peers = [f"{ADDRESS[o]}:{CLUSTER_PORT}" for o in NODES if o != name]
            self.nodes[name] = peer_node(self.data[name], peers, name=f"node-{name}", host="0.0.0.0",
                                         port=CLIENT_PORT, cluster_port=CLUSTER_PORT, http_port=HTTP_PORT,
                                         tls=node_tls(self.data[name]), auth_file=own.authorization_path,
                                         route_secret=own.route_secret())
            self.nodes[name].write_config()

    def start(self, key: str, ns: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        with (self.logs / f"{key}.log").open("ab") as out:
            proc = subprocess.Popen(self.net.exec(ns, *argv), env=env or dict(os.environ), cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs[key] = proc
        return proc

    def start_nats(self) -> None:
        """B's and C's nodes, then `stoker up --peer` in A: its node, the control plane, the join desk."""
        binary = find_nats_server()
        for name in ("b", "c"):
            node = self.nodes[name]
            self.start(f"nats-{name}", name, [binary, "-c", str(node.spec.conf_path), "-l",
                                              str(self.logs / f"nats-{name}.server.log")])
        peers = [arg for o in ("b", "c") for arg in ("--peer", f"{ADDRESS[o]}:{CLUSTER_PORT}")]
        self.start("up-a", "a", [sys.executable, "-m", "ops", "--data-dir", str(self.data["a"]), "up", "--no-worker",
                                 "--listen", "0.0.0.0", *peers, "--start-timeout", "90"], self.env())

    def env(self, **extra: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        return {**clean, "STOKER_PREFIX": PREFIX, "STOKER_LOG_FORMAT": "json", "STOKER_LOG_LEVEL": "info",
                "STOKER_DISCOVERY_LOST_AFTER_S": "2", "STOKER_DISCOVERY_TICK_S": "0.2",
                "STOKER_SCHEDULER_TICK_S": "0.2", "STOKER_TRAINER_HEARTBEAT_S": "0.3",
                "STOKER_TRAINER_DETECT_GPUS": "false", **extra}

    def plane_env(self, credential: Path, **extra: str) -> dict[str, str]:
        a = self.data["a"]
        return self.env(**{"STOKER_NATS_URL": A_URL, "STOKER_NATS_CA": str(a / "tls" / "ca.pem"),
                           "STOKER_DATA_DIR": str(a), "STOKER_REPLICAS": "3",
                           "STOKER_NATS_CREDENTIALS": str(credential), **extra})

    def stoker(self, ns: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.net.exec(ns, sys.executable, "-m", "ops", *args), env=self.env(), cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def wait_up(self, timeout: float) -> None:
        """Until `stoker up` in A says it is up (bounded; its exit is a failure at once)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (read_state(self.data["a"]) or {}).get("state") == "up":
                return
            if self.procs["up-a"].poll() is not None:
                raise AssertionError(f"stoker up in A exited with {self.procs['up-a'].returncode}")
            time.sleep(0.2)
        raise AssertionError(f"stoker up in A was not up within {timeout:g} s")

    def tail(self) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-6:]
            parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


async def until(check: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            found = await check()
            if found:
                return found
        except Exception as exc:  # not yet (no leader, no stream): tried again until the deadline
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g} s (last error: {last!r})")


async def wait_event(log: JetStreamLog, aggregate: str, aggregate_id: str, match: Callable[[StoredEvent], bool],
                     timeout: float = 45.0) -> StoredEvent:
    async def find() -> StoredEvent:
        async for stored in log.subscribe(1, filter_subject=log.topology.events(aggregate, aggregate_id)):
            if match(stored):
                return stored
        raise AssertionError("unreachable")

    return await asyncio.wait_for(find(), timeout)


def other_platform_token(base: Path, url: str) -> str:
    """A join token as another platform's `stoker join-token create` makes it: its own CA, a URL of ours."""
    elsewhere = base / "elsewhere"
    ca, ca_key = pki.ensure_ca(elsewhere)
    der = ca.public_bytes(serialization.Encoding.DER)

    token = JoinToken(platform_id=new_id(), prefix=PREFIX, token_id=new_id(), urls=(url,), ca_der=der,
                      ca_sha256=hashlib.sha256(der).digest(),
                      expires_at=int((datetime.now(UTC) + timedelta(hours=1)).timestamp()), labels=(),
                      seed=new_user_seed(), reusable=False)
    return encode_token(token, ca_key)


UNAUTHENTICATED = """
import asyncio, sys
from eventstore.connect import NatsUnavailable, connect
async def main():
    try:
        await connect(sys.argv[1], "intruder", ca_file=sys.argv[2], reconnect=False)
    except NatsUnavailable as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    print("connected", file=sys.stderr)
asyncio.run(main())
"""


def test_a_fleet_of_three_namespaces(tmp_path: Path) -> None:
    net = namespaces_or_skip()
    fleet = Fleet(tmp_path, net)
    try:
        net.up()
        fleet.prepare()
        fleet.start_nats()
        fleet.wait_up(120)
        in_namespace(net.ns["a"], lambda: scenario(fleet), timeout=150)
    except BaseException as exc:
        if not isinstance(exc, pytest.skip.Exception):
            raise AssertionError(f"{exc}\n{fleet.tail()}") from exc
        raise
    finally:
        fleet.stop()
        net.down()


async def scenario(fleet: Fleet) -> None:
    a = fleet.data["a"]
    store = CredentialStore(a)
    ca = str(a / "tls" / "ca.pem")
    nc = await until(lambda: connect(A_URL, "fleet-test", credentials=store.role_path("admin"),
                                     ca_file=ca), 30, "the admin connecting to node A")
    try:
        log = JetStreamLog(nc, fleet.topology)
        info = await log.js.stream_info(fleet.topology.events_stream)  # made by `stoker up`, R3
        assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2, info.cluster

        # B joins with a token over TLS and takes the job.
        made = await asyncio.to_thread(fleet.stoker, "a", "--data-dir", str(a), "--json", "join-token", "create",
                                       "--url", f"tls://{ADDRESS['a']}:{CLIENT_PORT}", "--no-qr")
        assert made.returncode == 0, made.stderr
        token = json.loads(made.stdout)["token"]
        fleet.start("worker-b", "b", [sys.executable, "-m", "ops", "--data-dir", str(fleet.base / "machine-b"),
                                      "worker", "--join", token, "--id", "wb"], fleet.env())
        await wait_event(log, "worker", "wb", lambda s: type(s.event).__name__ == "WorkerRegistered", 60)
        job_id = await until(lambda: _submit(nc, fleet.topology), 30, "the scheduler taking the job")
        started = await wait_event(log, "job", job_id, lambda s: isinstance(s.event, JobStarted))
        assert started.event.worker_id == "wb"
        await wait_event(log, "job", job_id, lambda s: isinstance(s.event, JobCheckpointed) and s.event.iteration >= 10)

        # A worker in A; then B's cable is pulled.
        fleet.start("worker-a", "a", [sys.executable, "-m", "services.trainer"],
                    fleet.plane_env(store.worker_path("wa"), STOKER_TRAINER_WORKER_ID="wa",
                                    STOKER_DATA_DIR=str(fleet.base / "machine-a")))
        beats = await nc.subscribe(fleet.topology.telemetry("heartbeat", "wa"))
        await beats.next_msg(timeout=60)  # beating, not only registered: discovery would find it silent
        await beats.unsubscribe()
        fleet.net.cut("b")
        await wait_event(log, "worker", "wb", lambda s: isinstance(s.event, WorkerLost))
        await wait_event(log, "job", job_id,
                         lambda s: isinstance(s.event, JobRequeued) and s.event.reason == "worker_lost")
        resumed = await wait_event(log, "job", job_id,
                                   lambda s: isinstance(s.event, JobStarted) and s.event.attempt > 1)
        events, _ = await until(lambda: log.load("job", job_id), 30, "the job's events")  # leaders may move
        last = max(e.event.iteration for e in events if isinstance(e.event, JobCheckpointed) and e.event.attempt == 1)
        assert resumed.event.worker_id == "wa" and resumed.event.resumed_from == last
        done = await wait_event(log, "job", job_id, lambda s: isinstance(s.event, JobCompleted), 60)
        assert done.event.attempt == resumed.event.attempt and done.event.result["resumed_from"] == last

        # C: no credential, and a machine with another platform's token: one line each, refused by the server.
        intruder = await asyncio.to_thread(
            subprocess.run, fleet.net.exec("c", sys.executable, "-c", UNAUTHENTICATED,
                                           f"tls://{ADDRESS['c']}:{CLIENT_PORT}", ca),
            env=fleet.env(), cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert intruder.returncode == 1 and "requires a credential" in intruder.stderr, intruder.stderr
        assert len(intruder.stderr.strip().splitlines()) == 1, intruder.stderr
        assert "authentication error" in (fleet.logs / "nats-c.server.log").read_text()  # its log line
        foreign = other_platform_token(fleet.base, f"tls://{ADDRESS['c']}:{CLIENT_PORT}")
        stranger = await asyncio.to_thread(fleet.stoker, "c", "--data-dir", str(fleet.base / "machine-c"), "worker",
                                           "--join", foreign)
        assert stranger.returncode == 1 and "another platform" in stranger.stderr, stranger.stderr
        assert len(stranger.stderr.strip().splitlines()) == 1, stranger.stderr
        assert read_joined(fleet.base / "machine-c") is None

        # B back in the cluster (every replica current), then node C is killed mid-stream: every acknowledged
        # append is in the stream afterwards.
        fleet.net.mend("b")
        await until(lambda: _all_current(log, fleet.topology), 60, "B's replicas current again")
        acked = await _appends_through_a_node_loss(log, fleet)
        counted = await until(lambda: _count(log, fleet.topology), 30, "reading the alerts back")
        assert counted == acked and acked >= 40, (counted, acked)
    finally:
        await nc.close()


async def _submit(nc, topology: Topology) -> str:
    accepted = await call(nc, topology, SubmitJob(workload="sleep", max_iterations=250,
                                                  params={"step_s": 0.04, "checkpoint_every": 5}), JobAccepted)
    return accepted.job_id


RULE = "fleet_probe"


async def _appends_through_a_node_loss(log: JetStreamLog, fleet: Fleet) -> int:
    acked = 0
    for i in range(60):
        if i == 20:
            pid = int(fleet.nodes["c"].spec.pid_path.read_text().strip())
            os.kill(pid, signal.SIGKILL)
        event = AlertRaised(alert_id=new_id(), rule=RULE, target_kind="host", target="node-c", value=float(i),
                            threshold=0.0, message="durability probe", raised_at=datetime.now(UTC))
        try:
            await asyncio.wait_for(log.append("alert", event.alert_id, [event], 0), 10)
        except Exception:  # not acknowledged (a leader moving): not counted, not promised
            await asyncio.sleep(0.2)
            continue
        acked += 1
    return acked


async def _all_current(log: JetStreamLog, topology: Topology) -> bool:
    info = await log.js.stream_info(topology.events_stream)
    replicas = info.cluster.replicas or []
    return len(replicas) == 2 and all(r.current and not r.offline for r in replicas)


async def _count(log: JetStreamLog, topology: Topology) -> int:
    end = await log.last_seq()
    found = 0
    async for msg in log.read_raw(1, until_seq=end, filter_subject=topology.events("alert")):
        stored = log.decode(msg)
        if stored is not None and isinstance(stored.event, AlertRaised) and stored.event.rule == RULE:
            found += 1
    return found
