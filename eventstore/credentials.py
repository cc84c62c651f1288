"""NATS credentials of a platform: one nkey per control-plane role and per worker, in `<data dir>/credentials`.

Layout (the directory 0700, every file 0600):

    credentials/admin.nk scheduler.nk discovery.nk projector.nk gateway.nk   seeds of the control plane
    credentials/workers/<worker_id>.pub                                       each admitted worker's public key
    credentials/workers/<worker_id>.nk                                        its seed, when kept here (local worker)
    credentials/authorization.conf                                           the nats-server `authorization` block

A seed file holds the seed alone, as the `nats` CLI reads it (`nats --nkey FILE`). The server configuration
holds public keys only: a seed never leaves the machine it was made for (except inside a join token) and
never crosses the wire (the client signs the server's nonce). Admitting or revoking a worker is a change
of `workers/` plus `write_authorization` and `eventstore.server.reload_nats`: no restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path

import msgspec
import nkeys

from contracts.base import is_valid_id
from contracts.subjects import Topology
from eventstore.permissions import CONTROL_PLANE, Role, permissions
from eventstore.pki import write_private

CREDENTIALS_DIR = "credentials"
AUTHORIZATION_FILE = "authorization.conf"
ROUTE_SECRET_FILE = "route.secret"
WORKER_ID_FILE = "worker-id"  # <data dir>/trainer/worker-id: the id a worker keeps once derived


class CredentialError(ValueError):
    """A credential is missing, unreadable or not an nkey seed; the message says which and what to do."""


class User(msgspec.Struct, frozen=True):
    """One NATS user: its role, its worker id (workers only) and its public nkey."""

    role: Role
    public_key: str
    worker_id: str | None = None
    token_id: str | None = None  # a join token's credential: the token it may claim


class Members(msgspec.Struct, frozen=True, kw_only=True):
    """Who may connect, as far as a change says (`CredentialStore.apply`): workers to let in (id → public key),
    worker ids to let in no more, join tokens that may be claimed (id → key), keys to let in no more. What it
    does not name is left as it is (the control plane, a worker the change does not know)."""

    workers: dict[str, str] = {}
    revoked: frozenset[str] = frozenset()
    joins: dict[str, str] = {}
    removed_keys: frozenset[str] = frozenset()


def new_seed() -> str:
    """A fresh user nkey seed (`SU…`)."""
    return nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER).decode()


def public_key(seed: str) -> str:
    """The public key (`U…`) of a user seed; CredentialError when it is not one."""
    try:
        pair = nkeys.from_seed(bytearray(seed.strip().encode()))
        key = pair.public_key.decode()
    except (nkeys.NkeysError, ValueError, TypeError) as exc:
        raise CredentialError(f"not an nkey seed ({exc.__class__.__name__})") from None
    if not key.startswith("U"):
        raise CredentialError("not a user nkey seed")
    return key


def valid_public_key(key: str) -> bool:
    """Whether `key` looks like a user public nkey (`U` and 55 base32 characters)."""
    return bool(re.fullmatch(r"U[A-Z2-7]{55}", key))


def read_seed(path: Path) -> str:
    """The seed in a credential file, with one clear error line when it cannot be used."""
    try:
        seed = path.read_text().strip()
    except PermissionError:
        raise CredentialError(f"cannot read the NATS credential {path} (permission denied): run stoker as the "
                              "user who started the platform, or pass another with --credentials / "
                              "STOKER_NATS_CREDENTIALS") from None
    except FileNotFoundError:
        raise CredentialError(f"no NATS credential at {path}: `stoker up` creates the platform's in "
                              f"<data dir>/{CREDENTIALS_DIR}; pass another with --credentials / "
                              "STOKER_NATS_CREDENTIALS") from None
    except OSError as exc:
        raise CredentialError(f"cannot read the NATS credential {path}: {exc.strerror or exc}") from None
    try:
        public_key(seed)
    except CredentialError as exc:
        raise CredentialError(f"{path} is {exc}: a credential file holds one nkey seed (SU…)") from None
    return seed


def write_secret(path: Path, secret: str) -> None:
    """Write a secret readable by its owner only (created 0600, never briefly wider; replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(path, (secret + "\n").encode())


def derived_worker_id(hostname: str, data_dir: Path) -> str:
    """`<hostname>-<8 hex of the data dir>`: stable per host and data dir, a valid subject token."""
    host = re.sub(r"[^A-Za-z0-9_-]+", "-", hostname.split(".")[0]).strip("-")[:48] or "worker"
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
    return f"{host}-{digest}"


def local_worker_id(configured: str, data_dir: Path, hostname: str) -> str:
    """A worker's id: the configured one, else the one kept in the data dir, else a derived one (then kept)."""
    if configured:
        if not is_valid_id(configured):
            raise ValueError(f"worker id {configured!r} may hold only letters, digits, '-' and '_'")
        return configured
    path = data_dir / "trainer" / WORKER_ID_FILE
    try:
        kept = path.read_text().strip()
        if is_valid_id(kept):
            return kept
    except OSError:
        pass
    chosen = derived_worker_id(hostname, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(chosen + "\n")
    return chosen


class CredentialStore:
    """The credentials of one platform, kept in `<data dir>/credentials`."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / CREDENTIALS_DIR
        self.workers_dir = self.root / "workers"
        self.joins_dir = self.root / "joins"  # the public keys of join tokens that may still be claimed

    def role_path(self, role: Role) -> Path:
        """Where a control-plane role's seed is kept."""
        if role not in CONTROL_PLANE:
            raise ValueError(f"{role!r} is not a control-plane role (workers have one credential each)")
        return self.root / f"{role}.nk"

    def worker_path(self, worker_id: str) -> Path:
        """Where a worker's seed is kept when it is kept here."""
        return self.workers_dir / f"{_checked(worker_id)}.nk"

    def ensure_control_plane(self) -> dict[Role, Path]:
        """A seed for every control-plane role, made once and reused; {role: seed file}."""
        self._make_dirs()
        paths = {}
        for role in CONTROL_PLANE:
            path = self.role_path(role)
            if not path.exists():
                write_secret(path, new_seed())
            read_seed(path)  # a damaged file is said now, not as a refused connection later
            paths[role] = path
        return paths

    def ensure_worker(self, worker_id: str) -> Path:
        """A kept credential for a worker of this machine (the local worker of `stoker up`), reused; its file."""
        path = self.worker_path(worker_id)
        if not path.exists():
            self._make_dirs()
            write_secret(path, new_seed())
        self.admit_worker(worker_id, public_key(read_seed(path)))
        return path

    def issue_worker(self, worker_id: str) -> str:
        """A new credential for a worker of another machine (a join token carries it): returns the seed.

        Only the public key stays here; a worker of that id admitted before gets the new key (the old one
        stops working at the next `write_authorization` + reload).
        """
        seed = new_seed()
        self.admit_worker(worker_id, public_key(seed))
        self.worker_path(worker_id).unlink(missing_ok=True)
        return seed

    def admit_worker(self, worker_id: str, key: str) -> None:
        """Let the holder of the seed of public key `key` in as worker `worker_id`."""
        if not valid_public_key(key):
            raise CredentialError(f"{key!r} is not a user public nkey (U…)")
        self._make_dirs()
        write_secret(self.workers_dir / f"{_checked(worker_id)}.pub", key)

    def revoke_worker(self, worker_id: str) -> bool:
        """Remove a worker's credential; True when it had one. Takes effect at the next write + reload."""
        found = False
        for path in (self.workers_dir / f"{_checked(worker_id)}.pub", self.worker_path(worker_id)):
            if path.exists():
                path.unlink()
                found = True
        return found

    def admit_join(self, token_id: str, key: str) -> None:
        """Let the holder of the seed of `key` in, able only to claim a join token (`token_id`)."""
        if not valid_public_key(key):
            raise CredentialError(f"{key!r} is not a user public nkey (U…)")
        self._make_dirs()
        write_secret(self.joins_dir / f"{_checked(token_id)}.pub", key)

    def remove_keys(self, keys: set[str]) -> bool:
        """Let these public keys in no more (a join token's or a worker's); True when one was here."""
        found = False
        for folder in (self.joins_dir, self.workers_dir):
            for path in sorted(folder.glob("*.pub")) if folder.is_dir() else []:
                if path.read_text().strip() in keys:
                    path.unlink()
                    found = True
        return found

    def apply(self, members: Members) -> bool:
        """Make the users here what `members` says (idempotent); True when something changed, so that the
        `authorization` block is to be written again and the server reloaded (ops.joining.apply_members)."""
        changed = False
        workers = self.workers()
        for worker_id, key in members.workers.items():
            if workers.get(worker_id) != key:
                self.admit_worker(worker_id, key)
                changed = True
        for worker_id in members.revoked:
            changed = self.revoke_worker(worker_id) or changed
        joins = self.joins()
        for token_id, key in members.joins.items():
            if joins.get(token_id) != key:
                self.admit_join(token_id, key)
                changed = True
        if members.removed_keys:
            changed = self.remove_keys(set(members.removed_keys)) or changed
        return changed

    def joins(self) -> dict[str, str]:
        """Every join token that may still be claimed: {token id: public key}."""
        return self._keys(self.joins_dir)

    def workers(self) -> dict[str, str]:
        """Every admitted worker: {worker id: public key}."""
        return self._keys(self.workers_dir)

    @staticmethod
    def _keys(folder: Path) -> dict[str, str]:
        if not folder.is_dir():
            return {}
        out = {}
        for path in sorted(folder.glob("*.pub")):
            key = path.read_text().strip()
            if is_valid_id(path.stem) and valid_public_key(key):
                out[path.stem] = key
        return out

    def users(self) -> list[User]:
        """Every user the server lets in: the control plane's roles (those with a seed here) and the workers."""
        users = [User(role, public_key(read_seed(self.role_path(role))))
                 for role in CONTROL_PLANE if self.role_path(role).exists()]
        users += [User("worker", key, worker_id) for worker_id, key in self.workers().items()]
        users += [User("join", key, token_id=token_id) for token_id, key in self.joins().items()]
        return users

    def write_authorization(self, topology: Topology) -> Path:
        """Write the nats-server `authorization` block for every user now; its path (every node includes it)."""
        self._make_dirs()
        path = self.authorization_path
        write_secret(path, authorization_config(self.users(), topology))
        return path

    def authorization_current(self, topology: Topology) -> bool:
        """Whether the `authorization` block on disk admits exactly the users here now (a change written to
        `workers/` before a crash, and not yet to the block, says False)."""
        try:
            written = self.authorization_path.read_text()
        except OSError:
            return False
        return written == authorization_config(self.users(), topology) + "\n"

    @property
    def authorization_path(self) -> Path:
        """The generated `authorization` block."""
        return self.root / AUTHORIZATION_FILE

    def route_secret(self) -> str:
        """The password cluster nodes of this platform connect their routes with (made once)."""
        path = self.root / ROUTE_SECRET_FILE
        if not path.exists():
            self._make_dirs()
            write_secret(path, secrets.token_urlsafe(24))
        return path.read_text().strip()

    def _make_dirs(self) -> None:
        for path in (self.root, self.workers_dir, self.joins_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path, 0o700)


def operator_credential(configured: Path | None, data_dir: Path) -> Path | None:
    """The credential an operator's command (the CLI, the doctor, the firewall service) signs in with: the one
    configured (--credentials / STOKER_NATS_CREDENTIALS), else this data dir's admin seed when `stoker up` made
    one. A seed this user may not read is still returned: reading it says so in one line."""
    if configured is not None:
        return configured
    admin = CredentialStore(data_dir).role_path("admin")
    try:
        return admin if admin.exists() else None
    except PermissionError:
        return admin


def _checked(worker_id: str) -> str:
    if not is_valid_id(worker_id):
        raise CredentialError(f"worker id {worker_id!r} may hold only letters, digits, '-' and '_'")
    return worker_id


def authorization_config(users: list[User], topology: Topology) -> str:
    """The nats-server `authorization` block admitting exactly `users`, each with its role's permissions."""
    if not any(u.role == "admin" for u in users):
        raise CredentialError("no admin user: nobody could manage the streams")
    entries = [{"nkey": u.public_key,
                "permissions": permissions(u.role, topology, u.worker_id, public_key=u.public_key,
                                           token_id=u.token_id).config()}
               for u in users]
    # JSON is nats-server configuration too; quoted strings keep `$JS…` and `>` literal.
    lines = ["# Generated by stoker from eventstore/permissions.py; edits are overwritten.",
             f"# Users: {', '.join(u.role if u.worker_id is None else f'worker {u.worker_id}' for u in users)}",
             f"authorization: {json.dumps({'users': entries}, indent=1)}"]
    return "\n".join(lines)


ROUTE_CONFIG_FILE = "route.conf"
POOL_LOCK_SUFFIX = ".nk"


def route_config(secret: str, hosts: list[str], port: int = 6222) -> str:
    """The inside of a node's `cluster {}` block: the route login and a route to every node (`host:port`)."""
    if not hosts:
        raise ValueError("a cluster needs at least one node")
    routes = ", ".join(json.dumps(f"nats-route://route:{secret}@{host}:{port}") for host in hosts)
    return "\n".join(["# Generated by stoker: the route password of this platform and a route to every node.",
                      f'authorization {{ user: "route", password: {json.dumps(secret)} }}',
                      f"routes: [{routes}]"]) + "\n"


def pool_worker_ids(count: int) -> list[str]:
    """The ids of a pool of pre-issued worker credentials: worker-1 … worker-<count>."""
    if not 1 <= count <= 256:
        raise ValueError(f"a worker pool holds 1 to 256 credentials, not {count}")
    return [f"worker-{i}" for i in range(1, count + 1)]


def write_compose_credentials(data_dir: Path, topology: Topology, workers: int, hosts: list[str],
                              port: int = 6222) -> CredentialStore:
    """Everything `compose/docker-compose.yml` mounts, under `<data_dir>/credentials` (made once, reused).

    The control plane's seeds, a pool of `workers` worker seeds (`workers/worker-<n>.nk`: each scaled worker
    container holds one, `stoker worker --pool`), the `authorization` block and `route.conf` for `hosts`.
    """
    store = CredentialStore(data_dir)
    store.ensure_control_plane()
    for worker_id in pool_worker_ids(workers):
        store.ensure_worker(worker_id)
    store.write_authorization(topology)
    write_secret(store.root / ROUTE_CONFIG_FILE, route_config(store.route_secret(), hosts, port).rstrip("\n"))
    return store


def claim_pool_credential(pool: Path) -> tuple[str, Path, int]:
    """The first worker seed in `pool` (`<id>.nk`) no other process holds: (worker id, file, locked fd).

    The hold is an exclusive `flock` on the seed file, released when the holder's last descriptor closes
    (its process ends, however it ends): a restarted container claims again and finds its credential free.
    Keep the fd open (and inheritable across an exec) for as long as the worker runs.
    """
    import fcntl

    try:
        candidates = sorted(p for p in pool.glob(f"*{POOL_LOCK_SUFFIX}") if is_valid_id(p.stem))
    except OSError as exc:
        raise CredentialError(f"cannot read the worker pool {pool}: {exc.strerror or exc}") from None
    if not candidates:
        raise CredentialError(f"no worker credentials (<id>.nk) in {pool}: `stoker security compose-credentials` "
                              "makes them (--workers N)")
    for path in candidates:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            read_seed(path)
        except CredentialError:
            os.close(fd)
            raise
        return path.stem, path, fd
    raise CredentialError(f"every worker credential in {pool} is in use ({len(candidates)}): make more with "
                          "`stoker security compose-credentials --workers N`, or scale down")
