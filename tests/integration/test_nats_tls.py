"""A real nats-server with stoker's TLS: clients pinning the platform's CA get in, everyone else is refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from contracts.subjects import Topology
from eventstore import pki
from eventstore.connect import NatsUnavailable, connect
from eventstore.log import JetStreamLog
from eventstore.server import NatsServer, ServerSpec, cluster_nodes, free_port

LOCAL_NAMES = pki.machine_names("127.0.0.1")


def tls_node(base: Path, tls: pki.ServerTls | None) -> NatsServer:
    spec = ServerSpec(store_dir=base / "n" / "jetstream", port=free_port(), http_port=free_port(), name="tls-test",
                      tls=tls)
    return NatsServer(spec)


@pytest_asyncio.fixture(scope="module")
async def platform(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    """A TLS-only nats-server on 127.0.0.1 whose certificate (under its data dir's CA) covers 127.0.0.1."""
    base = tmp_path_factory.mktemp("tls-platform")
    server = await tls_node(base, pki.ensure_server_tls(base / "data", LOCAL_NAMES)).start()
    yield server
    server.stop()


def log_size(server: NatsServer) -> int:
    return server.log_path.stat().st_size


async def logged(server: NatsServer, text: str, since: int = 0, timeout: float = 10.0) -> bool:
    """Whether the server's log says `text` after byte `since`, within `timeout` (it writes as it goes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in server.log_path.read_bytes()[since:].decode(errors="replace"):
            return True
        await asyncio.sleep(0.05)
    return False


async def refused(url: str, ca_file: str | None) -> str:
    with pytest.raises(NatsUnavailable) as caught:
        nc = await connect(url, "tls-test", reconnect=False, timeout=2, ca_file=ca_file)
        await nc.close()
    message = str(caught.value)
    assert "\n" not in message
    return message


async def test_a_client_pinning_the_platforms_ca_connects_and_uses_jetstream(platform: NatsServer) -> None:
    assert platform.url.startswith("tls://127.0.0.1:")
    nc = await connect(platform.url, "tls-test", reconnect=False, ca_file=str(platform.spec.tls.ca_file))
    try:
        assert nc.connected_url.scheme == "tls"
        log = JetStreamLog(nc, Topology("tlstest"))
        await log.ensure_streams()
        assert (await log.stream_state()).messages == 0
    finally:
        await nc.close()


async def test_a_client_pinning_another_ca_is_refused(platform: NatsServer, tmp_path: Path) -> None:
    other = pki.ensure_server_tls(tmp_path, LOCAL_NAMES)
    mark = log_size(platform)
    message = await refused(platform.url, str(other.ca_file))
    assert "not signed by the pinned CA" in message and pki.short_fingerprint(other.fingerprint) in message
    assert "another platform" in message
    assert await logged(platform, "TLS handshake error", mark)


async def test_a_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    tls = pki.ensure_server_tls(tmp_path / "data", ["host-b.example", "192.0.2.20"])  # another machine's names
    server = await tls_node(tmp_path, tls).start()
    try:
        message = await refused(server.url, str(tls.ca_file))
        assert "certificate for other names" in message and "IP address mismatch" in message
        assert await logged(server, "TLS handshake error")
    finally:
        server.stop()


@pytest.mark.parametrize("scheme", ["nats", "tls"])
async def test_a_client_without_the_ca_is_told_tls_needs_it(platform: NatsServer, scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{platform.spec.port}"
    mark = log_size(platform)
    message = await refused(url, None)
    assert "requires TLS with its platform's CA" in message and "stoker worker --join" in message
    assert await logged(platform, "TLS handshake error", mark)


async def test_a_client_pinning_a_ca_never_talks_plain_text_to_a_server_without_tls(tmp_path: Path) -> None:
    plain = await tls_node(tmp_path, None).start()
    try:
        ca = pki.ensure_server_tls(tmp_path / "data", LOCAL_NAMES).ca_file
        message = await refused(f"tls://127.0.0.1:{plain.spec.port}", str(ca))
        assert "did not complete a TLS handshake" in message and "never talks to it in plain text" in message
    finally:
        plain.stop()


async def test_a_cluster_with_tls_forms_its_routes_over_tls(tmp_path: Path) -> None:
    tls = pki.ensure_server_tls(tmp_path / "data", LOCAL_NAMES)
    nodes = cluster_nodes(tmp_path / "cluster", 3, name="tlsc", tls=tls)
    assert all("tls {" in n.spec.config().split("cluster {")[1] for n in nodes)
    for node in nodes:
        node.start_process()
    try:
        for node in nodes:
            await node.wait_healthy(30)
        nc = await connect(",".join(n.url for n in nodes), "tls-test", ca_file=str(tls.ca_file))
        try:
            log = JetStreamLog(nc, Topology("tlsr3"))
            await log.ensure_streams(replicas=3)  # needs every route up, under the CA
            info = await nc.jetstream().stream_info(log.topology.events_stream)
            assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2
        finally:
            await nc.close()
    finally:
        for node in nodes:
            node.stop()
