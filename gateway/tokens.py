"""API tokens: random secrets shown once, kept as SHA-256 in TokenIssued events, folded into memory."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from contracts import events as ev
from contracts.base import is_valid_id, new_id, utcnow
from contracts.errors import NotFound
from eventstore.decision import Folded, run_decision
from eventstore.follow import follow_forever
from eventstore.ports import EventLog
from gateway import token_domain
from gateway.token_domain import LOGIN_NAME, ROLES, Purpose, Role, TokenRecord

__all__ = ["LOGIN_NAME", "ROLES", "TOKEN_PREFIX", "Purpose", "Role", "TokenRecord", "TokenRegistry", "digest",
           "follow_tokens", "issue_token", "load_registry", "new_secret", "revoke_token", "role_allows"]

TOKEN_PREFIX = "stk_"


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
        """Fold one token event (token_domain.evolve_record), keeping each token's one record object."""
        self.position = max(self.position, seq)
        before = self.by_id.get(getattr(event, "token_id", ""))
        after = token_domain.evolve_record(before, event)
        if before is None and after is not None:
            self.by_id[after.token_id] = after
            self._by_hash[after.sha256] = after
        elif before is not None and isinstance(event, ev.TokenRevoked):
            before.revoked_at = after.revoked_at  # in place: sessions holding the record see the revocation
            for listener in self.listeners:
                listener(before)

    def authenticate(self, token: str, now: datetime | None = None) -> TokenRecord | None:
        """The active token with this secret, or None."""
        record = self._by_hash.get(digest(token))
        # The dict lookup already matched; compare again in constant time out of caution.
        if record is None or not hmac.compare_digest(record.sha256, digest(token)):
            return None
        return record if record.active(now or utcnow()) else None

    def records(self) -> list[TokenRecord]:
        """Every token ever issued, oldest first."""
        return token_domain.ordered(self.by_id.values())


async def load_registry(event_log: EventLog, registry: TokenRegistry | None = None) -> TokenRegistry:
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


async def follow_tokens(event_log: EventLog, registry: TokenRegistry) -> None:
    """Keep the registry current with new token events (run as a task; cancel to stop).

    A broken consumer is restarted from the registry's position: revocations must not go unseen.
    """
    def apply(msg) -> None:
        stored = event_log.decode(msg)
        if stored is not None:
            registry.apply(stored.event, stored.seq)
        else:
            registry.position = max(registry.position, msg.metadata.sequence.stream)

    await follow_forever(event_log, lambda: registry.position, apply, name="tokens",
                         filter_subject=event_log.topology.events("token"))


async def issue_token(event_log: EventLog, role: Role, name: str = "", expires_in: timedelta | None = None, *,
                      purpose: Purpose = "api", registry: TokenRegistry | None = None) -> tuple[ev.TokenIssued, str]:
    """Append TokenIssued for a fresh secret; returns the event and the secret (shown once).

    A login token supersedes the earlier ones: their TokenRevoked go in the same atomic append
    (`registry`: the tokens as already folded; read from the log when not given, or after a conflict).
    """
    secret = new_secret()
    now = utcnow()
    event = ev.TokenIssued(token_id=new_id(), role=role, token_sha256=digest(secret), name=name,
                           expires_at=now + expires_in if expires_in else None, issued_at=now, purpose=purpose)

    async def load() -> Folded[token_domain.Tokens]:
        return Folded((await load_registry(event_log)).by_id if purpose == "login" else {}, {})

    start: Folded[token_domain.Tokens] | None

    if purpose != "login":
        start = Folded(token_domain.initial_state(), {})  # an API token revokes nothing: nothing to read
    else:
        start = Folded(registry.by_id, {}) if registry is not None else None
    await run_decision(event_log, "token", lambda tokens: token_domain.decide_issue(event, tokens.values()),
                       token_domain.evolve, load=load, start=start, checked=token_domain.checked_on_issue)
    return event, secret


async def revoke_token(event_log: EventLog, token_id: str) -> ev.TokenRevoked | None:
    """Append TokenRevoked; None when it already was revoked, NotFound when it never existed."""
    if not is_valid_id(token_id):
        raise NotFound(f"no token {token_id}")
    now = utcnow()

    async def load() -> Folded[token_domain.Tokens]:
        events, version = await event_log.load("token", token_id)
        tokens: token_domain.Tokens = token_domain.initial_state()
        for stored in events:
            tokens = token_domain.evolve(tokens, stored.event)
        return Folded(tokens, {token_id: version})

    decided = await run_decision(event_log, "token", lambda tokens: token_domain.decide_revoke(tokens, token_id, now),
                                 token_domain.evolve, load=load)
    return decided.events[0] if decided.events else None
