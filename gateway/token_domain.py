"""API tokens' decider: issuing and revoking in, token events out. Pure: no I/O, no clock.

The state is the tokens by id. `evolve` returns a new mapping (the registry that the gateway
authenticates with keeps its own records and changes them in place, see gateway.tokens).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

import msgspec

from contracts import events as ev
from contracts.errors import NotFound

Role = Literal["admin", "operator", "viewer"]
Purpose = Literal["api", "login"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
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


Tokens = Mapping[str, TokenRecord]  # by token id


def initial_state() -> dict[str, TokenRecord]:
    """No tokens."""
    return {}


def evolve_record(record: TokenRecord | None, event: ev.Event) -> TokenRecord | None:
    """One token after one of its events (a new record when it changes; the old one is untouched)."""
    if isinstance(event, ev.TokenIssued) and record is None:
        return TokenRecord(token_id=event.token_id, role=event.role, name=event.name, sha256=event.token_sha256,
                           issued_at=event.issued_at, expires_at=event.expires_at, purpose=event.purpose)
    if isinstance(event, ev.TokenRevoked) and record is not None and record.revoked_at is None:
        return msgspec.structs.replace(record, revoked_at=event.revoked_at)
    return record


def evolve(tokens: Tokens, event: ev.Event) -> Tokens:
    """The tokens after one event."""
    token_id = getattr(event, "token_id", None)
    if token_id is None:
        return tokens
    before = tokens.get(token_id)
    after = evolve_record(before, event)
    return tokens if after is before else {**tokens, token_id: after}


def ordered(records: Iterable[TokenRecord]) -> list[TokenRecord]:
    """Oldest first."""
    return sorted(records, key=lambda r: (r.issued_at, r.token_id))


def decide_issue(issued: ev.TokenIssued, records: Iterable[TokenRecord]) -> list[ev.TokenEvent]:
    """The events of issuing a token: it, and for a login token the revocation of every earlier active login."""
    if issued.purpose != "login":
        return [issued]
    return [issued, *(ev.TokenRevoked(token_id=r.token_id, revoked_at=issued.issued_at)
                      for r in ordered(records) if r.is_login and r.active(issued.issued_at))]


def decide_revoke(tokens: Tokens, token_id: str, now: datetime) -> list[ev.TokenEvent]:
    """Revoke one token; nothing when it already was, NotFound when it never existed."""
    record = tokens.get(token_id)
    if record is None:
        raise NotFound(f"no token {token_id}")
    if record.revoked_at is not None:
        return []
    return [ev.TokenRevoked(token_id=token_id, revoked_at=now)]


def checked_on_issue(event: ev.Event) -> bool:
    """Whether issuing appends this event with its token's version checked: the new token must not exist yet
    (version 0); the revocations that go with a login token are not checked (revoking twice is harmless)."""
    return not isinstance(event, ev.TokenRevoked)
