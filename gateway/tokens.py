"""API tokens: random secrets shown once, kept as SHA-256 in TokenIssued events, folded into memory."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from contracts import events as ev
from contracts.base import is_valid_id, new_id, utcnow
from contracts.errors import NotFound
from eventstore.log import MAX_BATCH, JetStreamLog, PendingAppend
from eventstore.observability import get_logger

log = get_logger(component="tokens")
Role = Literal["admin", "operator", "viewer"]
Purpose = Literal["api", "login"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
TOKEN_PREFIX = "stk_"
LOGIN_NAME = "dashboard login (stoker up)"  # before tokens had a purpose, this name was what marked a login


class TokenRecord(msgspec.Struct, kw_only=True):
    """What the gateway knows of one token (never the secret)."""

    token_id: str
    role: Role
    name: str
    sha256: str
    issued_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    purpose: Purpose = "api"

    @property
    def is_login(self) -> bool:
        """A dashboard login link's token (also one issued before tokens had a purpose)."""
        return self.purpose == "login" or self.name == LOGIN_NAME

    def active(self, now: datetime) -> bool:
        """Neither revoked nor expired."""
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def role_allows(role: str, needed: str) -> bool:
    """Whether `role` is at least `needed` (viewer < operator < admin)."""
    return ROLES.index(role) >= ROLES.index(needed)  # type: ignore[arg-type]


def digest(token: str) -> str:
    """The SHA-256 a token is stored as."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret() -> str:
    """A fresh random token: 256 bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class TokenRegistry:
    """Tokens folded from their events; revocations call the listeners (to close live sockets)."""

    def __init__(self) -> None:
        self.by_id: dict[str, TokenRecord] = {}
        self._by_hash: dict[str, TokenRecord] = {}
        self.position = 0
        self.listeners: list[Callable[[TokenRecord], None]] = []

    def apply(self, event: ev.Event, seq: int = 0) -> None:
        """Fold one token event."""
        self.position = max(self.position, seq)
        if isinstance(event, ev.TokenIssued) and event.token_id not in self.by_id:
            record = TokenRecord(token_id=event.token_id, role=event.role, name=event.name,
                                 sha256=event.token_sha256, issued_at=event.issued_at, expires_at=event.expires_at,
                                 purpose=event.purpose)
            self.by_id[record.token_id] = record
            self._by_hash[record.sha256] = record
        elif isinstance(event, ev.TokenRevoked) and event.token_id in self.by_id:
            record = self.by_id[event.token_id]
            record.revoked_at = record.revoked_at or event.revoked_at
            for listener in self.listeners:
                listener(record)

    def authenticate(self, token: str, now: datetime | None = None) -> TokenRecord | None:
        """The active token with this secret, or None."""
        record = self._by_hash.get(digest(token))
        # The dict lookup already matched; compare again in constant time out of caution.
        if record is None or not hmac.compare_digest(record.sha256, digest(token)):
            return None
        return record if record.active(now or utcnow()) else None

    def records(self) -> list[TokenRecord]:
        """Every token ever issued, oldest first."""
        return sorted(self.by_id.values(), key=lambda r: (r.issued_at, r.token_id))


async def load_registry(event_log: JetStreamLog, registry: TokenRegistry | None = None) -> TokenRegistry:
    """Fold every token event in the log now."""
    registry = registry or TokenRegistry()
    topology = event_log.topology
    end = await event_log.last_seq()
    async for msg in event_log.read_raw(registry.position + 1, until_seq=end, filter_subject=topology.events("token")):
        stored = event_log.decode(msg)
        if stored is not None:
            registry.apply(stored.event, stored.seq)
    registry.position = max(registry.position, end)
    return registry


async def follow_tokens(event_log: JetStreamLog, registry: TokenRegistry) -> None:
    """Keep the registry current with new token events (run as a task; cancel to stop)."""
    subject = event_log.topology.events("token")
    while True:
        try:
            async for stored in event_log.subscribe(registry.position + 1, filter_subject=subject):
                registry.apply(stored.event, stored.seq)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a broken consumer must not leave revocations unseen
            log.warning("token follower restarting", error=repr(exc))
            await asyncio.sleep(1.0)


def decide_issue(issued: ev.TokenIssued, records: list[TokenRecord]) -> list[ev.TokenEvent]:
    """The events of issuing a token: it, and for a login token the revocation of every earlier active login."""
    if issued.purpose != "login":
        return [issued]
    return [issued, *(ev.TokenRevoked(token_id=r.token_id, revoked_at=issued.issued_at)
                      for r in records if r.is_login and r.active(issued.issued_at))]


async def issue_token(event_log: JetStreamLog, role: Role, name: str = "", expires_in: timedelta | None = None, *,
                      purpose: Purpose = "api", registry: TokenRegistry | None = None) -> tuple[ev.TokenIssued, str]:
    """Append TokenIssued for a fresh secret; returns the event and the secret (shown once).

    A login token supersedes the earlier ones: their TokenRevoked go in the same atomic append
    (`registry`: the tokens as already folded; read from the log when not given).
    """
    secret = new_secret()
    now = utcnow()
    event = ev.TokenIssued(token_id=new_id(), role=role, token_sha256=digest(secret), name=name,
                           expires_at=now + expires_in if expires_in else None, issued_at=now, purpose=purpose)
    if purpose == "login":
        registry = registry or await load_registry(event_log)
    events = decide_issue(event, registry.records() if registry else [])
    # The new token must not exist yet (version 0); revoking twice is harmless, so revocations are unchecked.
    appends = [PendingAppend("token", e.token_id, [e], 0 if e is event else None) for e in events]
    for start in range(0, len(appends), MAX_BATCH):
        await event_log.append_batch(appends[start:start + MAX_BATCH])
    return event, secret


async def revoke_token(event_log: JetStreamLog, token_id: str) -> ev.TokenRevoked | None:
    """Append TokenRevoked; None when it already was revoked, NotFound when it never existed."""
    events, version = await event_log.load("token", token_id) if is_valid_id(token_id) else ([], 0)
    if not events:
        raise NotFound(f"no token {token_id}")
    if any(isinstance(e.event, ev.TokenRevoked) for e in events):
        return None
    event = ev.TokenRevoked(token_id=token_id, revoked_at=utcnow())
    await event_log.append("token", token_id, [event], version)
    return event
