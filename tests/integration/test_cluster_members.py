"""A worker admitted or revoked on one node of a cluster across machines is admitted or revoked on every node
(ops.members): three data dirs clustered on 127.0.0.1 (A the first machine, B and C imported from A's node
bundles), each node with its follower running as `stoker up` runs it; the admin CLI on A."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from contracts.subjects import Topology
from eventstore.connect import NatsRefused, connect
from eventstore.credentials import CredentialStore
from eventstore.fleet import export_node, import_node, node_tls
from eventstore.follow import cancel_and_wait
from eventstore.log import JetStreamLog
from eventstore.pki import LOOPBACK_NAMES, ensure_server_tls
from eventstore.server import NatsServer, free_port, peer_node, write_record
from ops.members import follow_members

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 30.0


async def eventually(check: Callable[[], bool], timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s")
        await asyncio.sleep(0.1)


class Cluster:
    """Three nodes, one data dir each; `follow(name)` runs that node's follower."""

    def __init__(self, tmp_path: Path, topology: Topology) -> None:
        self.topology = topology
        self.data = {name: tmp_path / name for name in "abc"}
        first = self.data["a"]
        store = CredentialStore(first)
        store.ensure_control_plane()
        store.write_authorization(topology)
        ensure_server_tls(first, LOOPBACK_NAMES)
        for name in "bc":
            import_node(self.data[name], export_node(first, topology, name, ["127.0.0.1"]))
        store.write_authorization(topology)
        self.ports = {name: (free_port(), free_port(), free_port()) for name in "abc"}
        self.nodes: dict[str, NatsServer] = {}
        self.followers: dict[str, asyncio.Task] = {}

    def node(self, name: str) -> NatsServer:
        data, (port, cluster_port, http_port) = self.data[name], self.ports[name]
        tls = node_tls(data) if name != "a" else ensure_server_tls(data, LOOPBACK_NAMES)
        peers = [f"127.0.0.1:{self.ports[other][1]}" for other in "abc" if other != name]
        store = CredentialStore(data)
        return peer_node(data, peers, name=name, host="127.0.0.1", port=port, cluster_port=cluster_port,
                         http_port=http_port, tls=tls, auth_file=store.authorization_path,
                         route_secret=store.route_secret())

    async def start(self, *names: str) -> None:
        for name in names:
            self.nodes[name] = self.node(name)
            self.nodes[name].start_process()
        await asyncio.gather(*(self.nodes[n].wait_healthy(60) for n in names))
        for name in names:
            node = self.nodes[name]
            write_record(self.data[name], node, pid=node.process.pid)

    def ca(self, name: str) -> str:
        return str(self.data[name] / "tls" / "ca.pem")

    async def follow(self, name: str) -> None:
        self.followers[name] = asyncio.create_task(follow_members(
            self.nodes[name].url, str(CredentialStore(self.data[name]).role_path("admin")), self.ca(name),
            self.topology.prefix, self.data[name], joins=name != "a"))

    async def stop(self, name: str) -> None:
        if name in self.followers:
            await cancel_and_wait([self.followers.pop(name)])
        await asyncio.to_thread(self.nodes[name].stop)

    async def close(self) -> None:
        for name in list(self.nodes):
            await self.stop(name)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOKER_")}
        env |= {"STOKER_PREFIX": self.topology.prefix, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "ops", "--data-dir", str(self.data["a"]), *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=90)

    def workers(self, name: str) -> dict[str, str]:
        return CredentialStore(self.data[name]).workers()


@pytest.fixture
async def cluster(tmp_path: Path, topology: Topology):
    made = Cluster(tmp_path, topology)
    try:
        await made.start("a", "b", "c")
        admin = await connect(made.nodes["a"].url, "admin", credentials=CredentialStore(made.data["a"])
                              .role_path("admin"), ca_file=made.ca("a"))
        try:
            await JetStreamLog(admin, topology).ensure_streams(replicas=3)
        finally:
            await admin.close()
        for name in "abc":
            await made.follow(name)
        yield made
    finally:
        await made.close()


async def admit(cluster: Cluster, tmp_path: Path, worker_id: str) -> Path:
    seed = tmp_path / f"{worker_id}.nk"
    result = await asyncio.to_thread(cluster.cli, "security", "admit-worker", worker_id, "--out", str(seed))
    assert result.returncode == 0, result.stderr
    assert "in the log" in result.stdout and "not in the log" not in result.stdout, result.stdout
    return seed


async def test_a_worker_admitted_on_a_connects_to_b_and_a_revoke_on_a_cuts_it_off_there(cluster, tmp_path) -> None:
    seed = await admit(cluster, tmp_path, "w9")
    await eventually(lambda: "w9" in cluster.workers("b") and "w9" in cluster.workers("c"))
    closed = asyncio.Event()
    worker = await connect(cluster.nodes["b"].url, "w9", credentials=seed, ca_file=cluster.ca("b"),
                           on_closed=closed.set)
    try:
        await worker.flush()
        result = await asyncio.to_thread(cluster.cli, "security", "revoke-worker", "w9")
        assert result.returncode == 0, result.stderr
        assert "credential revoked; in effect now" in result.stdout and "; in the log" in result.stdout
        await asyncio.wait_for(closed.wait(), WAIT_S)  # B's server closed it
        assert "w9" not in cluster.workers("b")
        with pytest.raises(NatsRefused):
            await connect(cluster.nodes["b"].url, "w9", credentials=seed, ca_file=cluster.ca("b"), reconnect=False)
    finally:
        with contextlib.suppress(Exception):
            await worker.close()


async def test_a_node_down_during_a_revoke_refuses_the_worker_when_it_comes_back(cluster, tmp_path) -> None:
    seed = await admit(cluster, tmp_path, "w8")
    await eventually(lambda: "w8" in cluster.workers("b"))
    await cluster.stop("b")
    result = await asyncio.to_thread(cluster.cli, "security", "revoke-worker", "w8")
    assert result.returncode == 0, result.stderr
    assert "w8" in cluster.workers("b")  # B was down: it did not hear of it yet
    await cluster.start("b")
    await cluster.follow("b")
    await eventually(lambda: "w8" not in cluster.workers("b"))
    with pytest.raises(NatsRefused):
        await connect(cluster.nodes["b"].url, "w8", credentials=seed, ca_file=cluster.ca("b"), reconnect=False)
