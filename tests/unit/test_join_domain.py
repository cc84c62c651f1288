"""Join tokens' decider, the URLs a token carries, a joined data dir's platform check, and the QR code."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import segno

from contracts import events as ev
from contracts.commands import ClaimJoinToken
from contracts.errors import Conflict, InvalidCommand, NotFound
from ops import join_domain
from ops.joined import Joined, check_same_platform, default_worker_id
from ops.joining import advertised_urls, check_labels, new_user_seed, public_key, uncovered_hosts
from ops.jointoken import InvalidJoinToken, JoinToken, qr_text

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEY_A, KEY_B, TOKEN_KEY = (public_key(new_user_seed()) for _ in range(3))


def issued(token_id: str = "t1", reusable: bool = False, hours: float = 1) -> ev.JoinTokenIssued:
    return ev.JoinTokenIssued(token_id=token_id, key=TOKEN_KEY, labels=("gpu",), reusable=reusable,
                              expires_at=T0 + timedelta(hours=hours), issued_at=T0)


def claim(token_id: str = "t1", worker_id: str = "w-a", key: str = KEY_A) -> ClaimJoinToken:
    return ClaimJoinToken(token_id=token_id, worker_id=worker_id, worker_key=key, hostname="host-a")


def fold(*events: ev.Event) -> join_domain.JoinTokens:
    tokens: join_domain.JoinTokens = join_domain.initial_state()
    for event in events:
        tokens = join_domain.evolve(tokens, event)
    return tokens


def used(event: ev.JoinTokenEvent, tokens: join_domain.JoinTokens) -> join_domain.JoinTokens:
    return join_domain.evolve(tokens, event)


def test_an_active_token_is_claimed_once_and_a_repeat_of_that_claim_changes_nothing() -> None:
    tokens = fold(issued())
    events = join_domain.decide_claim(tokens, claim(), T0 + timedelta(minutes=5))
    assert events == [ev.JoinTokenUsed(token_id="t1", worker_id="w-a", worker_key=KEY_A, hostname="host-a",
                                       used_at=T0 + timedelta(minutes=5))]
    after = used(events[0], tokens)
    assert after["t1"].status(T0) == "used"
    assert join_domain.decide_claim(after, claim(), T0 + timedelta(minutes=6)) == []  # its reply was lost
    with pytest.raises(Conflict, match="already used \\(by worker w-a at 2026-01-01 00:05 UTC\\)"):
        join_domain.decide_claim(after, claim(worker_id="w-b", key=KEY_B), T0 + timedelta(minutes=6))


def test_a_reusable_token_lets_machine_after_machine_join_until_it_expires() -> None:
    tokens = fold(issued(reusable=True))
    for n, key in enumerate((KEY_A, KEY_B)):
        [event] = join_domain.decide_claim(tokens, claim(worker_id=f"w-{n}", key=key), T0 + timedelta(minutes=n))
        tokens = used(event, tokens)
    assert [u.worker_id for u in tokens["t1"].uses] == ["w-0", "w-1"] and tokens["t1"].status(T0) == "active"
    with pytest.raises(Conflict, match="expired at 2026-01-01 01:00 UTC"):
        join_domain.decide_claim(tokens, claim(worker_id="w-9", key=public_key(new_user_seed())),
                                 T0 + timedelta(hours=1))


@pytest.mark.parametrize(("history", "match", "error"), [
    ([], "unknown to this platform", NotFound),
    ([issued(), ev.JoinTokenRevoked(token_id="t1", revoked_at=T0)], "was revoked at 2026-01-01 00:00 UTC", Conflict),
    ([issued(hours=0.5)], "expired at 2026-01-01 00:30 UTC", Conflict),
])
def test_unknown_revoked_and_expired_tokens_are_refused(history, match, error) -> None:
    with pytest.raises(error, match=match):
        join_domain.decide_claim(fold(*history), claim(), T0 + timedelta(minutes=30))


def test_a_worker_id_another_machine_joined_as_is_refused_but_the_same_machine_may_join_again() -> None:
    tokens = fold(issued("t1"), issued("t2"))
    tokens = used(join_domain.decide_claim(tokens, claim("t1"), T0)[0], tokens)
    with pytest.raises(Conflict, match=r"worker id w-a already joined .* from host-a"):
        join_domain.decide_claim(tokens, claim("t2", key=KEY_B), T0)
    assert len(join_domain.decide_claim(tokens, claim("t2"), T0)) == 1  # same key: the same machine rejoining
    assert join_domain.worker_keys(tokens) == {"w-a": KEY_A}


def test_revoking_is_once_and_stale_token_keys_are_dropped() -> None:
    tokens = fold(issued("t1"), issued("t2", hours=2), issued("t3", reusable=True, hours=3))
    [revoked] = join_domain.decide_revoke(tokens, "t1", T0)
    tokens = used(revoked, tokens)
    assert join_domain.decide_revoke(tokens, "t1", T0) == []
    with pytest.raises(NotFound):
        join_domain.decide_revoke(tokens, "nope", T0)
    tokens = used(join_domain.decide_claim(tokens, claim("t3"), T0)[0], tokens)
    assert join_domain.keys_to_drop(tokens, T0) == {TOKEN_KEY}  # t1 is revoked (all share a key here)
    assert join_domain.keys_to_drop(fold(issued("t2", hours=2)), T0 + timedelta(hours=1)) == set()
    assert join_domain.keys_to_drop(fold(issued("t2", hours=2)), T0 + timedelta(hours=2)) == {TOKEN_KEY}


def test_the_urls_of_a_token_are_each_address_at_each_nodes_port() -> None:
    local = "tls://127.0.0.1:4222,tls://127.0.0.1:4223"
    addresses = ["127.0.0.1", "192.0.2.10", "::1", "2001:db8::5"]
    assert advertised_urls(local, "0.0.0.0", addresses) == [
        "tls://192.0.2.10:4222", "tls://192.0.2.10:4223", "tls://[2001:db8::5]:4222", "tls://[2001:db8::5]:4223"]
    assert advertised_urls("tls://127.0.0.1:4222", "192.0.2.10", addresses) == ["tls://192.0.2.10:4222"]
    assert advertised_urls("tls://127.0.0.1:4222", "127.0.0.1", addresses) == ["tls://127.0.0.1:4222"]
    assert advertised_urls(local, "0.0.0.0", addresses, ["tls://nats.example:4222"]) == ["tls://nats.example:4222"]
    assert uncovered_hosts(["tls://nats.example:4222", "tls://192.0.2.10:1"], {"192.0.2.10"}) == ["nats.example"]


def test_labels_are_checked_and_may_be_comma_separated() -> None:
    assert check_labels(("gpu,a100", "gpu", " big ")) == ("gpu", "a100", "big")
    with pytest.raises(InvalidCommand, match="label 'no way'"):
        check_labels(("no way",))


def test_a_data_dir_that_joined_one_platform_refuses_a_token_for_another() -> None:
    der = b"x"
    token = JoinToken(platform_id="P2", prefix="stoker", token_id="t", urls=("tls://h:1",), ca_der=der,
                      ca_sha256=hashlib.sha256(der).digest(), expires_at=0, labels=(), seed=new_user_seed())
    joined = Joined(platform_id="P1", prefix="stoker", fingerprint="ab" * 32, urls=["tls://h:1"], worker_id="w",
                    labels=[], token_id="t0", joined_at=T0)
    check_same_platform(None, token)
    with pytest.raises(InvalidJoinToken, match=r"already joined platform P1 .* for platform P2"):
        check_same_platform(joined, token)
    with pytest.raises(InvalidJoinToken, match="join with another --data-dir"):  # same id, another CA
        check_same_platform(msgspec.structs.replace(joined, platform_id="P2"), token)
    check_same_platform(msgspec.structs.replace(joined, platform_id="P2", fingerprint=token.fingerprint), token)


def test_a_default_worker_id_is_a_valid_id_from_the_host_name(tmp_path) -> None:
    wid = default_worker_id("Lab Box.example.org", tmp_path)
    assert wid.startswith("Lab-Box-") and len(wid) == len("Lab-Box-") + 6
    assert default_worker_id("Lab Box.example.org", tmp_path) == wid != default_worker_id("lab", tmp_path / "x")


def test_the_qr_code_draws_exactly_the_modules_of_the_token() -> None:
    text = "SJ1" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" * 30
    border = 2
    drawn = qr_text(text, border).splitlines()
    symbol = segno.make(text, error="l")
    assert symbol.mode == "alphanumeric"
    size = len(symbol.matrix) + 2 * border
    light = [[True] * size for _ in range(size)]  # the terminal shows light modules as blocks
    for y, row in enumerate(symbol.matrix):
        for x, dark in enumerate(row):
            light[y + border][x + border] = not dark
    halves = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}
    seen = [[False] * size for _ in range(size)]
    assert len(drawn) == (size + 1) // 2
    for line_no, line in enumerate(drawn):
        assert len(line) == size
        for x, char in enumerate(line):
            top, bottom = halves[char]
            seen[2 * line_no][x] = top
            if 2 * line_no + 1 < size:
                seen[2 * line_no + 1][x] = bottom
    assert seen == light
