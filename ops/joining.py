"""Join tokens on the platform: made, listed and revoked by the admin CLI, claimed through the join desk.

Who may connect to NATS is the `NatsUsers` seam: the credential a token carries may only claim that token,
and the machine that claims it connects from then on with a key of its own (its seed never leaves it), so a
used single-use token is worth nothing even to someone who copied it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import nkeys
from cryptography.hazmat.primitives import serialization

from contracts import events as ev
from contracts.base import new_id, utcnow
from contracts.commands import ClaimJoinToken
from contracts.errors import InvalidCommand
from contracts.subjects import Topology
from eventstore.credentials import CredentialStore, Members
from eventstore.decision import Folded, run_decision
from eventstore.observability import get_logger
from eventstore.pki import ensure_ca, is_loopback, is_wildcard
from eventstore.ports import EventLog
from eventstore.server import reload_nats
from ops import join_domain
from ops.join_domain import JoinTokens
from ops.jointoken import JoinToken, encode_token

log = get_logger(component="joins")
AGGREGATE = "jointoken"
PLATFORM_ID_FILE = "platform-id"


class NatsUsers(Protocol):
    """Who may connect to NATS: one user per public nkey in the server's config, applied with a reload.

    Every method is idempotent.
    """

    async def allow_join(self, token_id: str, public_key: str) -> None:
        """Let `public_key` connect, able only to claim join token `token_id`."""

    async def allow_worker(self, worker_id: str, public_key: str) -> None:
        """Let `public_key` connect as worker `worker_id`."""

    async def remove(self, public_keys: Iterable[str]) -> None:
        """Let these keys connect no more (their connections are closed by the reload)."""


async def apply_members(data_dir: Path, topology: Topology, members: Members) -> bool:
    """The one way users change on a running node: apply `members` to the data dir's credentials and, when
    that changed anything, rewrite the `authorization` block and reload every running node of the data dir
    (the server closes the connections of users that are gone). True when something changed."""
    store = CredentialStore(data_dir)
    if not store.apply(members) and store.authorization_current(topology):
        return False
    store.write_authorization(topology)
    await reload_nats(data_dir)
    return True


class PlatformUsers:
    """The users of this data dir's nats-server (eventstore.credentials): each change rewrites the generated
    `authorization` block and reloads every running node (`apply_members`), so it holds at once and nothing
    restarts."""

    def __init__(self, data_dir: Path, topology: Topology) -> None:
        self.data_dir, self.topology = data_dir, topology

    async def allow_join(self, token_id: str, public_key: str) -> None:
        await apply_members(self.data_dir, self.topology, Members(joins={token_id: public_key}))

    async def allow_worker(self, worker_id: str, public_key: str) -> None:
        await apply_members(self.data_dir, self.topology, Members(workers={worker_id: public_key}))

    async def remove(self, public_keys: Iterable[str]) -> None:
        await apply_members(self.data_dir, self.topology, Members(removed_keys=frozenset(public_keys)))


class OpenNats:
    """A NATS server without users (one a test or a person started without `stoker up`'s credentials):
    nothing to register, anyone may connect; says so in the log."""

    async def allow_join(self, token_id: str, public_key: str) -> None:
        log.info("join credential not registered: NATS has no users", token_id=token_id)

    async def allow_worker(self, worker_id: str, public_key: str) -> None:
        log.info("worker credential not registered: NATS has no users", worker_id=worker_id)

    async def remove(self, public_keys: Iterable[str]) -> None:
        return None


def nats_users(data_dir: Path, topology: Topology) -> NatsUsers:
    """The users of this data dir's NATS server (the one place that picks the implementation): those of
    its generated `authorization` block, which `stoker up` writes."""
    if CredentialStore(data_dir).authorization_path.exists():
        return PlatformUsers(data_dir, topology)
    return OpenNats()


def new_user_seed() -> str:
    """A fresh NATS user nkey seed (`SU…`)."""
    return nkeys.encode_seed(secrets.token_bytes(32), nkeys.PREFIX_BYTE_USER).decode()


def public_key(seed: str) -> str:
    """The public key (`U…`) of a user nkey seed."""
    return nkeys.from_seed(bytearray(seed.encode())).public_key.decode()


def platform_id(data_dir: Path) -> str:
    """This data dir's platform id: made once, kept in the data dir."""
    path = Path(data_dir) / PLATFORM_ID_FILE
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
        if kept:
            return kept
    chosen = new_id()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(chosen + "\n")
    return chosen


def advertised_urls(local_url: str, listen: str, addresses: Sequence[str], asked: Sequence[str] = ()) -> list[str]:
    """The URLs another machine reaches the platform's NATS at: `asked`, else each node's port at each address.

    `local_url` is what this machine uses (one `tls://127.0.0.1:port` per node), `listen` the listen address,
    `addresses` the machine's own addresses (used when it listens on all of them). Pure.
    """
    if asked:
        return list(asked)
    ports = [urlsplit(u.strip()).port for u in local_url.split(",") if u.strip()]
    if is_wildcard(listen):
        hosts = [a for a in addresses if not is_loopback(a)] or ["127.0.0.1"]
    else:
        hosts = [listen.strip("[]")]
    return [f"tls://{f'[{h}]' if ':' in h else h}:{p}" for h in hosts for p in ports]


def uncovered_hosts(urls: Iterable[str], names: Iterable[str]) -> list[str]:
    """The hosts of `urls` that the server certificate's `names` do not cover (clients would refuse them)."""
    covered = {n.lower() for n in names}
    return [host for host in (urlsplit(u).hostname or "" for u in urls) if host.lower() not in covered]


async def load_join_tokens(event_log: EventLog) -> Folded[JoinTokens]:
    """Every join token as folded from the log now, with each one's version."""
    tokens: JoinTokens = join_domain.initial_state()
    versions: dict[str, int] = {}
    end = await event_log.last_seq()
    async for msg in event_log.read_raw(1, until_seq=end, filter_subject=event_log.topology.events(AGGREGATE)):
        parsed = event_log.topology.parse_event_subject(msg.subject)
        if parsed is not None:
            versions[parsed[1]] = msg.metadata.sequence.stream  # a malformed message moves the version too
        stored = event_log.decode(msg)
        if stored is not None:
            tokens = join_domain.evolve(tokens, stored.event)
    return Folded(tokens, versions)


async def issue_join_token(event_log: EventLog, data_dir: Path, urls: Sequence[str], *, expires_in: timedelta,
                           labels: Sequence[str] = (), reusable: bool = False, name: str = "",
                           seed: str | None = None, users: NatsUsers | None = None,
                           now: datetime | None = None) -> tuple[ev.JoinTokenIssued, str]:
    """Append JoinTokenIssued, register its credential, and return the event and the token's text.

    `seed` is the credential the token carries (a fresh user nkey by default); only its public key is kept.
    """
    now = now or utcnow()
    seed = seed or new_user_seed()
    ca, ca_key = ensure_ca(data_dir)
    der = ca.public_bytes(serialization.Encoding.DER)
    event = ev.JoinTokenIssued(token_id=new_id(), key=public_key(seed), labels=tuple(labels), reusable=reusable,
                               expires_at=now + expires_in, issued_at=now, name=name)
    token = JoinToken(platform_id=platform_id(data_dir), prefix=event_log.topology.prefix, token_id=event.token_id,
                      urls=tuple(urls), ca_der=der, ca_sha256=hashlib.sha256(der).digest(),
                      expires_at=int(event.expires_at.timestamp()), labels=tuple(labels), seed=seed,
                      reusable=reusable)
    text = encode_token(token, ca_key)
    await event_log.append(AGGREGATE, event.token_id, [event], 0)
    await (users or nats_users(data_dir, event_log.topology)).allow_join(event.token_id, event.key)
    return event, text


async def revoke_join_token(event_log: EventLog, token_id: str, users: NatsUsers,
                            now: datetime | None = None) -> ev.JoinTokenRevoked | None:
    """Append JoinTokenRevoked and drop its credential; None when it already was revoked."""
    now = now or utcnow()
    decided = await run_decision(event_log, AGGREGATE, lambda t: join_domain.decide_revoke(t, token_id, now),
                                 join_domain.evolve, load=lambda: load_join_tokens(event_log))
    record = decided.folded.state.get(token_id)
    if record is not None:
        await users.remove([record.key])
    return decided.events[0] if decided.events else None  # type: ignore[return-value]


async def claim_join_token(event_log: EventLog, claim: ClaimJoinToken, users: NatsUsers,
                           now: datetime | None = None) -> join_domain.JoinTokenRecord:
    """Decide a claim, append JoinTokenUsed, then let the worker's own key in.

    The users are set from the state after the decision, so a claim repeated after a crash finishes the job.
    A single-use token's own key is dropped by the caller once the reply is out (`JoinDesk`): dropping it now
    would close the claimer's connection before the reply reaches it.
    """
    now = now or utcnow()
    try:
        decided = await run_decision(event_log, AGGREGATE, lambda t: join_domain.decide_claim(t, claim, now),
                                     join_domain.evolve, load=lambda: load_join_tokens(event_log))
    except Exception as exc:
        log.warning("join refused", token_id=claim.token_id, worker_id=claim.worker_id, hostname=claim.hostname,
                    reason=str(exc))
        raise
    record = decided.folded.state[claim.token_id]
    await users.allow_worker(claim.worker_id, claim.worker_key)
    log.info("machine joined", token_id=claim.token_id, worker_id=claim.worker_id, hostname=claim.hostname,
             repeated=not decided.events)
    return record


def check_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Labels as given on the command line (comma-separated or repeated); InvalidCommand for a bad one."""
    found = tuple(dict.fromkeys(p.strip() for item in labels for p in item.split(",") if p.strip()))
    for label in found:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", label):
            raise InvalidCommand(f"label {label!r} may hold only letters, digits and . _ : - (at most 64)")
    return found
