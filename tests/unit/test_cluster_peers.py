"""Routes to nodes on other machines (`ServerSpec.peers`): pure configuration, checked by nats-server itself."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventstore.pki import ServerTls
from eventstore.server import ServerSpec, find_nats_server, parse_peer


def peer_spec(tmp_path: Path, **extra) -> ServerSpec:
    return ServerSpec(store_dir=tmp_path / "js", port=4222, http_port=8222, host="0.0.0.0", name="host1",
                      cluster_port=6222, peers=("host2:6222", "10.0.0.3:6222", "[fd00::4]:7222"),
                      route_secret="s3cret", **extra)


def test_peers_are_routed_to_with_the_route_password(tmp_path):
    conf = peer_spec(tmp_path).config()
    routes = re.search(r"routes: \[(.*)\]", conf).group(1)
    assert re.findall(r'"nats-route://route:s3cret@([^"]+)"', routes) == [
        "host2:6222", "10.0.0.3:6222", "[fd00::4]:7222"]
    assert 'authorization { user: "route", password: "s3cret" }' in conf
    assert 'listen: "0.0.0.0:6222"' in conf  # the cluster port is on the network, where the peers are
    assert "sync_interval: always" in conf


def test_without_peers_the_cluster_port_stays_on_loopback(tmp_path):
    conf = ServerSpec(store_dir=tmp_path, port=1, http_port=2, host="0.0.0.0", cluster_port=3,
                      routes=[3, 4, 5]).config()
    assert 'listen: "127.0.0.1:3"' in conf


def test_routes_to_peers_verify_the_peers_certificates(tmp_path):
    tls = ServerTls(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "server.pem", key_file=tmp_path / "key.pem",
                    fingerprint="00" * 32, names=("host1",))
    conf = peer_spec(tmp_path, tls=tls).config()
    cluster = conf[conf.index("cluster {"):]
    assert f'ca_file: "{tls.ca_file.as_posix()}"' in cluster and f'cert_file: "{tls.cert_file.as_posix()}"' in cluster


def test_nats_server_accepts_the_generated_configuration(tmp_path):
    spec = peer_spec(tmp_path)
    spec.conf_path.parent.mkdir(parents=True, exist_ok=True)
    spec.conf_path.write_text(spec.config())
    result = subprocess.run([find_nats_server(), "-t", "-c", str(spec.conf_path)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("bad", ["host2", "host2:", ":6222", "host2:0", "host2:70000", "ho st:6222",
                                 "nats://host2:6222", "-host:6222", "[fd00::4:6222"])
def test_a_bad_peer_is_one_clear_line(bad):
    with pytest.raises(ValueError, match="peer"):
        parse_peer(bad)


@given(st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9](\.[a-z]{2,5})?", fullmatch=True), st.integers(1, 65535))
def test_a_host_and_port_parse_back(host, port):
    assert parse_peer(f"{host}:{port}") == (host, port)
