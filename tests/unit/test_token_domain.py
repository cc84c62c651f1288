"""Tokens' decider, and issuing and revoking through eventstore.decision on the in-memory log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from contracts import events as ev
from contracts.errors import NotFound
from eventstore.memory import MemoryLog
from gateway import token_domain
from gateway.tokens import issue_token, load_registry, revoke_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def issued(token_id: str, purpose: str = "api", name: str = "", at: datetime = T0, **extra) -> ev.TokenIssued:
    return ev.TokenIssued(token_id=token_id, role="viewer", token_sha256="0" * 64, name=name, issued_at=at,
                          purpose=purpose, **extra)


def fold(*events: ev.Event) -> token_domain.Tokens:
    tokens: token_domain.Tokens = token_domain.initial_state()
    for event in events:
        tokens = token_domain.evolve(tokens, event)
    return tokens


def test_a_login_token_revokes_the_earlier_active_logins_only() -> None:
    later = T0 + timedelta(hours=1)
    tokens = fold(issued("old", "login"), issued("legacy", name=token_domain.LOGIN_NAME), issued("api"),
                  issued("expired", "login", expires_at=T0 + timedelta(minutes=1)),
                  issued("gone", "login"), ev.TokenRevoked(token_id="gone", revoked_at=T0))
    events = token_domain.decide_issue(issued("new", "login", at=later), tokens.values())
    assert [type(e).__name__ for e in events] == ["TokenIssued", "TokenRevoked", "TokenRevoked"]
    assert [e.token_id for e in events[1:]] == ["legacy", "old"]  # oldest first (then by id)
    assert token_domain.decide_issue(issued("api2", at=later), tokens.values()) == [issued("api2", at=later)]


def test_revoking_and_evolving() -> None:
    tokens = fold(issued("a"))
    with pytest.raises(NotFound):
        token_domain.decide_revoke(tokens, "nope", T0)
    (revoked,) = token_domain.decide_revoke(tokens, "a", T0)
    after = token_domain.evolve(tokens, revoked)
    assert tokens["a"].revoked_at is None and after["a"].revoked_at == T0  # the old state is untouched
    assert token_domain.decide_revoke(after, "a", T0) == []
    assert token_domain.evolve(after, ev.TokenRevoked(token_id="a", revoked_at=T0 + timedelta(1))) is after


async def test_issue_and_revoke_on_the_memory_log() -> None:
    log = MemoryLog()
    first, _ = await issue_token(log, "viewer", purpose="login")
    second, secret = await issue_token(log, "viewer", purpose="login")
    registry = await load_registry(log)
    assert registry.by_id[first.token_id].revoked_at is not None and registry.authenticate(secret) is not None
    revoked = await revoke_token(log, second.token_id)
    assert revoked is not None and await revoke_token(log, second.token_id) is None
    with pytest.raises(NotFound):
        await revoke_token(log, "0" * 26)


async def test_two_revocations_at_once_append_one_event() -> None:
    log = MemoryLog()
    token, _ = await issue_token(log, "operator")
    results = await asyncio.gather(revoke_token(log, token.token_id), revoke_token(log, token.token_id))
    assert sorted(r is None for r in results) == [False, True]  # the loser folded again and found it revoked
    assert [s.type async for s in log.read()] == ["TokenIssued", "TokenRevoked"]
