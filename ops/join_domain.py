"""Join tokens' decider: claims and revocations in, join-token events out. Pure: no I/O, no clock.

Why the log: a token's use and revocation are state changes, so they are events (`jointoken.<id>`), appended
with the aggregate's expected version. Two machines claiming one single-use token at once cannot both win:
the second append fails, the state is folded again, and the claim is refused as used. A file in the data dir
would need a lock of its own and would be invisible to every other reader of the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Literal

import msgspec

from contracts import events as ev
from contracts.commands import ClaimJoinToken
from contracts.errors import Conflict, NotFound

Status = Literal["active", "used", "expired", "revoked"]


class JoinUse(msgspec.Struct, frozen=True, kw_only=True):
    """One machine that joined with a token."""

    worker_id: str
    worker_key: str
    hostname: str
    used_at: datetime


class JoinTokenRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What the platform knows of one join token (never its seed)."""

    token_id: str
    key: str
    labels: tuple[str, ...]
    reusable: bool
    expires_at: datetime
    issued_at: datetime
    name: str = ""
    revoked_at: datetime | None = None
    uses: tuple[JoinUse, ...] = ()

    def status(self, now: datetime) -> Status:
        """Whether it may still be claimed, and if not, why not (revoked before used before expired)."""
        if self.revoked_at is not None:
            return "revoked"
        if self.uses and not self.reusable:
            return "used"
        return "expired" if now >= self.expires_at else "active"


JoinTokens = Mapping[str, JoinTokenRecord]  # by token id


def initial_state() -> dict[str, JoinTokenRecord]:
    """No join tokens."""
    return {}


def evolve(tokens: JoinTokens, event: ev.Event) -> JoinTokens:
    """The join tokens after one event."""
    if isinstance(event, ev.JoinTokenIssued) and event.token_id not in tokens:
        record = JoinTokenRecord(token_id=event.token_id, key=event.key, labels=event.labels, reusable=event.reusable,
                                 expires_at=event.expires_at, issued_at=event.issued_at, name=event.name)
        return {**tokens, event.token_id: record}
    before = tokens.get(getattr(event, "token_id", ""))
    if before is None:
        return tokens
    if isinstance(event, ev.JoinTokenUsed):
        use = JoinUse(worker_id=event.worker_id, worker_key=event.worker_key, hostname=event.hostname,
                      used_at=event.used_at)
        return {**tokens, before.token_id: msgspec.structs.replace(before, uses=(*before.uses, use))}
    if isinstance(event, ev.JoinTokenRevoked) and before.revoked_at is None:
        return {**tokens, before.token_id: msgspec.structs.replace(before, revoked_at=event.revoked_at)}
    return tokens


def ordered(records: Iterable[JoinTokenRecord]) -> list[JoinTokenRecord]:
    """Oldest first."""
    return sorted(records, key=lambda r: (r.issued_at, r.token_id))


def decide_claim(tokens: JoinTokens, claim: ClaimJoinToken, now: datetime) -> list[ev.JoinTokenEvent]:
    """A machine claims a token: JoinTokenUsed, nothing for a repeat of a claim that won, or why not."""
    record = tokens.get(claim.token_id)
    if record is None:
        raise NotFound(f"join token {claim.token_id} is unknown to this platform")
    if any(u.worker_id == claim.worker_id and u.worker_key == claim.worker_key for u in record.uses):
        return []  # the same machine asking again (its first reply was lost): it already joined
    status = record.status(now)
    if status == "revoked":
        raise Conflict(f"join token {record.token_id} was revoked at {record.revoked_at:%Y-%m-%d %H:%M} UTC")
    if status == "used":
        use = record.uses[0]
        raise Conflict(f"join token {record.token_id} was already used (by worker {use.worker_id} at "
                       f"{use.used_at:%Y-%m-%d %H:%M} UTC); make a new one, or one with --reusable")
    if status == "expired":
        raise Conflict(f"join token {record.token_id} expired at {record.expires_at:%Y-%m-%d %H:%M} UTC")
    taken = next((u for r in tokens.values() for u in r.uses
                  if u.worker_id == claim.worker_id and u.worker_key != claim.worker_key), None)
    if taken is not None:
        raise Conflict(f"worker id {claim.worker_id} already joined (at {taken.used_at:%Y-%m-%d %H:%M} UTC, from "
                       f"{taken.hostname or 'another machine'}); join with another --id")
    return [ev.JoinTokenUsed(token_id=record.token_id, worker_id=claim.worker_id, worker_key=claim.worker_key,
                             hostname=claim.hostname, used_at=now)]


def decide_revoke(tokens: JoinTokens, token_id: str, now: datetime) -> list[ev.JoinTokenEvent]:
    """Revoke a token: nothing when it already was, NotFound when it never existed."""
    record = tokens.get(token_id)
    if record is None:
        raise NotFound(f"no join token {token_id}")
    if record.revoked_at is not None:
        return []
    return [ev.JoinTokenRevoked(token_id=token_id, revoked_at=now)]


def keys_to_drop(tokens: JoinTokens, now: datetime) -> set[str]:
    """The token credentials that can no longer claim anything: their NATS users should go."""
    return {r.key for r in tokens.values() if r.status(now) != "active"}


def worker_keys(tokens: JoinTokens) -> dict[str, str]:
    """Each joined worker's key, by worker id."""
    return {u.worker_id: u.worker_key for r in ordered(tokens.values()) for u in r.uses}
