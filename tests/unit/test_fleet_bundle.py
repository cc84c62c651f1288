"""Node bundles (eventstore/fleet.py): what the first machine of a cluster gives each other node, and how a
node refuses what is not for it. Real files, real certificates, the real nats-server configuration check."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from contracts.subjects import Topology
from eventstore import pki
from eventstore.credentials import CredentialStore, public_key, read_seed
from eventstore.fleet import BundleError, export_node, import_node, is_node, node_tls
from eventstore.server import find_nats_server, peer_node
from ops.cli import main

TOPOLOGY = Topology("stoker")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def first_machine(tmp_path: Path) -> Path:
    data = tmp_path / "first"
    store = CredentialStore(data)
    store.ensure_control_plane()
    store.ensure_worker("local")
    return data


def keys(data: Path) -> set[tuple[str, str | None, str]]:
    return {(u.role, u.worker_id, u.public_key) for u in CredentialStore(data).users() if u.role != "join"}


def test_an_imported_node_lets_in_the_same_users_under_the_same_ca(tmp_path: Path) -> None:
    first = first_machine(tmp_path)
    bundle = export_node(first, TOPOLOGY, "host2.lan", ["10.0.0.2"])
    node = tmp_path / "node"
    assert import_node(node, bundle) == ("host2.lan", "host2")
    assert keys(node) == keys(first)  # every node admits exactly the first machine's users
    own = public_key(read_seed(CredentialStore(node).worker_path("host2")))  # its seed: only on the node
    assert ("worker", "host2", own) in keys(first) and not CredentialStore(first).worker_path("host2").exists()
    tls = node_tls(node)
    assert tls.fingerprint == pki.file_fingerprint(first / "tls" / "ca.pem")
    cert = x509.load_pem_x509_certificate(tls.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(tls.ca_file.read_bytes())
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    cert.verify_directly_issued_by(ca)
    assert {"host2.lan", "10.0.0.2", "127.0.0.1", "localhost"} <= pki.cert_names(cert)
    assert not (node / "tls" / "ca-key.pem").exists()  # the CA key stays on the first machine
    for secret in (tls.key_file, node / "credentials" / "admin.nk", node / "credentials" / "route.secret"):
        assert mode(secret) == 0o600
    assert (node / "credentials" / "route.secret").read_text() == (first / "credentials" / "route.secret").read_text()
    assert (node / "trainer" / "worker-id").read_text().strip() == "host2" and is_node(node)


def test_a_node_configuration_from_a_bundle_is_valid_for_nats_server(tmp_path: Path) -> None:
    first = first_machine(tmp_path)
    node = tmp_path / "node"
    import_node(node, export_node(first, TOPOLOGY, "host2", ["10.0.0.2"]))
    store = CredentialStore(node)
    server = peer_node(node, ["host1:6222", "10.0.0.3:6222"], name="host2", tls=node_tls(node),
                       auth_file=store.authorization_path, route_secret=store.route_secret())
    conf = server.write_config()
    text = conf.read_text()
    assert 'ping_interval: "2s"' in text and "nats-route://route:" in text and 'listen: "0.0.0.0:6222"' in text
    checked = subprocess.run([find_nats_server(), "-c", str(conf), "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


def test_a_later_bundle_takes_revoked_workers_away(tmp_path: Path) -> None:
    first = first_machine(tmp_path)
    node = tmp_path / "node"
    import_node(node, export_node(first, TOPOLOGY, "host2"))
    assert "local" in CredentialStore(node).workers()
    CredentialStore(first).revoke_worker("local")
    import_node(node, export_node(first, TOPOLOGY, "host2"))
    assert "local" not in CredentialStore(node).workers()
    assert "local" not in (node / "credentials" / "authorization.conf").read_text()


@pytest.mark.parametrize("damage", ["not json", "wrong kind", "bad seed", "foreign cert"])
def test_a_damaged_bundle_is_refused_with_one_line_and_changes_nothing(tmp_path: Path, damage: str) -> None:
    first = first_machine(tmp_path)
    bundle = json.loads(export_node(first, TOPOLOGY, "host2"))
    if damage == "wrong kind":
        bundle["kind"] = "something"
    elif damage == "bad seed":
        bundle["seeds"]["admin"] = "SUNOTASEED"
    elif damage == "foreign cert":
        other = tmp_path / "other"
        bundle["ca_pem"] = (pki.ensure_server_tls(other, ["x"]).ca_file).read_text()
    text = b"{" if damage == "not json" else json.dumps(bundle).encode()
    node = tmp_path / "node"
    with pytest.raises(BundleError) as refused:
        import_node(node, text)
    assert "\n" not in str(refused.value)
    assert not (node / "credentials").exists() and not (node / "tls").exists()


def test_a_first_machine_or_another_platform_s_node_refuses_a_bundle(tmp_path: Path) -> None:
    first = first_machine(tmp_path)
    bundle = export_node(first, TOPOLOGY, "host2")
    pki.ensure_ca(first)
    with pytest.raises(BundleError, match="first machine of its platform"):
        import_node(first, bundle)
    node = tmp_path / "node"
    import_node(node, bundle)
    other = tmp_path / "other"
    CredentialStore(other).ensure_control_plane()
    with pytest.raises(BundleError, match="node of another platform"):
        import_node(node, export_node(other, TOPOLOGY, "host2"))
    with pytest.raises(BundleError, match="imported from a bundle"):
        export_node(node, TOPOLOGY, "host3")


def test_the_cli_exports_and_imports_a_node(tmp_path: Path) -> None:
    first = first_machine(tmp_path)
    out = tmp_path / "host2.bundle"
    made = CliRunner().invoke(main, ["--data-dir", str(first), "security", "export-node", "host2", "--address",
                                     "10.0.0.2", "--out", str(out)])
    assert made.exit_code == 0, made.output
    assert mode(out) == 0o600 and "NATS is not running here" in made.output
    again = CliRunner().invoke(main, ["--data-dir", str(first), "security", "export-node", "host2", "--out", str(out)])
    assert again.exit_code == 1 and "exists" in again.output
    node = tmp_path / "node"
    taken = CliRunner().invoke(main, ["--data-dir", str(node), "security", "import-node", str(out)])
    assert taken.exit_code == 0, taken.output
    assert "node host2 (its worker: host2)" in taken.output and is_node(node)
    wrong = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "n2"), "security", "import-node", str(out)],
                               env={"STOKER_PREFIX": "elsewhere"})
    assert wrong.exit_code == 1 and "STOKER_PREFIX=stoker" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "said"), [
    (["--peer", "host2:6222", "--cluster", "3"], "choose one"),
    (["--peer", "host2"], "is not host:port"),
    (["--peer", "host2:6222", "--listen", "10.0.0.9"], None),
])
def test_stoker_up_refuses_a_bad_peer_in_one_line_before_starting_anything(tmp_path: Path, args: list[str],
                                                                           said: str | None) -> None:
    env = {"STOKER_NATS_TLS": "off"} if said is None else {}
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "d"), "up", *args], env=env)
    assert result.exit_code == 1, result.output
    assert said is None or said in result.output
    assert said is not None or "only with TLS" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "d" / "credentials").exists()
