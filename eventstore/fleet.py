"""A NATS cluster across machines: what every node shares, carried from the first machine to the others.

Every node of a cluster authenticates its own clients, so every node needs the same users (the generated
`authorization` block), the same route password and a server certificate under the same CA. The first
machine (`stoker up --listen 0.0.0.0 --peer …`, where the CA's key lives) makes them; `stoker security
export-node NAME --address ADDR` writes a node bundle for another machine (a 0600 JSON file: the CA
certificate, a server certificate and key for that node's names signed by the CA, the platform's credentials
directory, and a worker credential for that node's own worker), and `stoker security import-node FILE`
there puts each in its place in the data dir. The CA key never leaves the first machine; only it issues
certificates and runs the join desk.

Why a copied credentials directory and not the NATS operator/JWT mode: the generator already writes plain
nkey users with permissions from `eventstore.permissions`, and one file per node keeps one way of admitting
and revoking; JWTs would add an operator, an account resolver and a second permission path. The bundle
gives a node the users as they are at its export; what changes afterwards is in the log (the `credential`
and `jointoken` events), which every node's `stoker up --peer` follows and applies (ops.members), so a
worker admitted or revoked later is so on every node without a new bundle.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from contracts.base import is_valid_id
from contracts.subjects import Topology
from eventstore.credentials import (
    CONTROL_PLANE,
    ROUTE_SECRET_FILE,
    WORKER_ID_FILE,
    CredentialError,
    CredentialStore,
    public_key,
    valid_public_key,
    write_secret,
)
from eventstore.pki import (
    CA_CERT,
    CA_KEY,
    LOOPBACK_NAMES,
    SERVER_CERT,
    SERVER_KEY,
    TLS_DIR,
    ServerTls,
    cert_names,
    ensure_ca,
    file_fingerprint,
    fingerprint,
    issue_server_cert,
    pem_key,
    tls_dir,
    write_private,
)

BUNDLE_KIND = "stoker-node"
BUNDLE_VERSION = 1
NODE_FILE = "node.json"  # <data dir>/credentials/node.json: this data dir is a node imported from a bundle
PLATFORM_ID_FILE = "platform-id"  # as ops.joining keeps it: a joined machine's token names the same platform


class BundleError(ValueError):
    """A node bundle cannot be made, read or imported; the message says why in one line."""


def node_names(name: str, addresses: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """What a node's certificate covers: its host name, its addresses, and loopback (its own services)."""
    names = [name, *addresses, *LOOPBACK_NAMES]
    return tuple(dict.fromkeys(n.lower() for n in names if n))


def export_node(data_dir: Path, topology: Topology, name: str, addresses: list[str] | tuple[str, ...] = (),
                worker_id: str | None = None, now: datetime | None = None) -> bytes:
    """The bundle another machine imports to be node `name` of this platform's cluster (see the module doc).

    Issues that node's certificate and a credential for its worker (`worker_id`, default the node's name)
    here, so the caller must rewrite this machine's `authorization` block and reload it.
    """
    data_dir = Path(data_dir)
    if not is_valid_id(name.replace(".", "-")):
        raise BundleError(f"node name {name!r} must be a host name (letters, digits, '-' and '.')")
    if is_node(data_dir):
        raise BundleError(f"{data_dir} is a node imported from a bundle: export nodes from the first machine "
                          "(the one whose `stoker up` made the CA)")
    worker_id = worker_id or name.split(".")[0]
    if not is_valid_id(worker_id):
        raise BundleError(f"worker id {worker_id!r} may hold only letters, digits, '-' and '_'")
    now = now or datetime.now(UTC)
    ca, ca_key = ensure_ca(data_dir, now)
    cert, key = issue_server_cert(ca, ca_key, node_names(name, addresses), now)
    store = CredentialStore(data_dir)
    store.ensure_control_plane()
    worker_seed = store.issue_worker(worker_id)
    seeds = {role: store.role_path(role).read_text().strip() for role in CONTROL_PLANE}
    platform = data_dir / PLATFORM_ID_FILE
    bundle = {
        "kind": BUNDLE_KIND, "version": BUNDLE_VERSION, "prefix": topology.prefix, "node": name,
        "issued_at": now.isoformat(),
        "platform_id": platform.read_text().strip() if platform.exists() else "",
        "ca_pem": ca.public_bytes(serialization.Encoding.PEM).decode(),
        "cert_pem": cert.public_bytes(serialization.Encoding.PEM).decode(),
        "key_pem": pem_key(key).decode(),
        "route_secret": store.route_secret(),
        "seeds": seeds,
        "workers": store.workers(),
        "worker": {"id": worker_id, "seed": worker_seed},
    }
    return json.dumps(bundle, indent=1).encode()


def read_bundle(text: bytes) -> dict:
    """A node bundle's fields, checked; BundleError with one line when it is not one."""
    try:
        bundle = json.loads(text)
    except (ValueError, UnicodeDecodeError):
        raise BundleError("not a stoker node bundle (not JSON): `stoker security export-node` makes one") from None
    if not isinstance(bundle, dict) or bundle.get("kind") != BUNDLE_KIND:
        raise BundleError("not a stoker node bundle: `stoker security export-node` makes one")
    if bundle.get("version") != BUNDLE_VERSION:
        raise BundleError(f"node bundle version {bundle.get('version')!r} is not {BUNDLE_VERSION}: export it again "
                          "with this version of stoker")
    try:
        ca = x509.load_pem_x509_certificate(bundle["ca_pem"].encode())
        cert = x509.load_pem_x509_certificate(bundle["cert_pem"].encode())
        serialization.load_pem_private_key(bundle["key_pem"].encode(), None)
        seeds = {role: bundle["seeds"][role] for role in CONTROL_PLANE}
        for seed in (*seeds.values(), bundle["worker"]["seed"]):
            public_key(seed)
        workers = dict(bundle["workers"])
    except (KeyError, TypeError, ValueError, CredentialError) as exc:
        raise BundleError(f"the node bundle is damaged ({exc.__class__.__name__}: {exc}); export it again") from None
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise BundleError("the node bundle's certificate is not signed by its CA; export it again") from None
    if not all(is_valid_id(w) and valid_public_key(k) for w, k in workers.items()):
        raise BundleError("the node bundle names a worker badly; export it again")
    return bundle


def import_node(data_dir: Path, text: bytes) -> tuple[str, str]:
    """Make `data_dir` the node a bundle describes; (node name, worker id). Run again with a newer bundle to
    take the platform's users as they are now (workers admitted or revoked since)."""
    bundle = read_bundle(text)
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = tls_dir(data_dir)
    if (folder / CA_KEY).exists():
        raise BundleError(f"{data_dir} is the first machine of its platform (it holds the CA key): import a node "
                          "bundle into another data dir")
    ca_pem = bundle["ca_pem"].encode()
    imported_before = file_fingerprint(folder / CA_CERT)
    if (folder / CA_CERT).exists() and not is_node(data_dir):
        raise BundleError(f"{data_dir} already has a CA of its own: import a node bundle into a fresh data dir")
    ca = x509.load_pem_x509_certificate(ca_pem)
    incoming = fingerprint(ca.public_bytes(serialization.Encoding.DER))
    if imported_before and imported_before != incoming:
        raise BundleError(f"{data_dir} is a node of another platform (CA {imported_before[:16]}…): use a fresh "
                          "data dir")
    write_private(folder / SERVER_KEY, bundle["key_pem"].encode())
    (folder / SERVER_CERT).write_bytes(bundle["cert_pem"].encode())
    (folder / CA_CERT).write_bytes(ca_pem)
    store = CredentialStore(data_dir)
    for role in CONTROL_PLANE:
        write_secret(store.role_path(role), bundle["seeds"][role])
    write_secret(store.root / ROUTE_SECRET_FILE, bundle["route_secret"])
    wanted = dict(bundle["workers"])
    for worker_id in set(store.workers()) - set(wanted):
        store.revoke_worker(worker_id)
    for worker_id, key in wanted.items():
        store.admit_worker(worker_id, key)
    own = bundle["worker"]
    write_secret(store.worker_path(own["id"]), own["seed"])
    store.admit_worker(own["id"], public_key(own["seed"]))
    if bundle.get("platform_id"):
        write_secret(data_dir / PLATFORM_ID_FILE, bundle["platform_id"])
    trainer = data_dir / "trainer"
    trainer.mkdir(parents=True, exist_ok=True, mode=0o700)
    (trainer / WORKER_ID_FILE).write_text(own["id"] + "\n")
    write_secret(store.root / NODE_FILE, json.dumps({"node": bundle["node"], "prefix": bundle["prefix"],
                                                     "issued_at": bundle["issued_at"]}))
    store.write_authorization(Topology(bundle["prefix"]))
    return bundle["node"], own["id"]


def is_node(data_dir: Path) -> bool:
    """Whether a data dir is a node imported from a bundle (not the first machine of its platform)."""
    return (Path(data_dir) / "credentials" / NODE_FILE).exists()


def node_name(data_dir: Path) -> str:
    """The name an imported node was exported under."""
    return json.loads((Path(data_dir) / "credentials" / NODE_FILE).read_text())["node"]


def node_tls(data_dir: Path) -> ServerTls:
    """An imported node's TLS files (issued by the first machine: never made or renewed here)."""
    folder = Path(data_dir) / TLS_DIR
    try:
        cert = x509.load_pem_x509_certificate((folder / SERVER_CERT).read_bytes())
    except (OSError, ValueError) as exc:
        raise BundleError(f"the node's certificate in {folder} cannot be read ({exc}); import its bundle "
                          "again") from None
    return ServerTls(folder / SERVER_CERT, folder / SERVER_KEY, folder / CA_CERT, file_fingerprint(folder / CA_CERT),
                     tuple(sorted(cert_names(cert))))
