"""Join tokens' text: every token round-trips, and no change to its text gives another token."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import pki
from ops import jointoken
from ops.joining import new_user_seed
from ops.jointoken import InvalidJoinToken, JoinToken, decode_token, encode_token

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    cert, key = pki.ensure_ca(tmp_path_factory.mktemp("ca"), T0)
    return cert.public_bytes(serialization.Encoding.DER), key


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    cert, key = pki.ensure_ca(tmp_path_factory.mktemp("other"), T0)
    return cert.public_bytes(serialization.Encoding.DER), key


def make(der: bytes, **changes) -> JoinToken:
    values = dict(platform_id="01PLATFORM", prefix="stoker", token_id="01TOKEN", urls=("tls://192.0.2.10:4222",),
                  ca_der=der, ca_sha256=hashlib.sha256(der).digest(), expires_at=int(T0.timestamp()) + 3600,
                  labels=("gpu",), seed=new_user_seed(), reusable=False)
    return JoinToken(**(values | changes))


ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
hosts = st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}", fullmatch=True)
tokens = st.fixed_dictionaries({
    "platform_id": ids, "token_id": ids, "prefix": st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True),
    "urls": st.lists(st.builds(lambda h, p, s: f"{s}://{h}:{p}", hosts, st.integers(1, 65535),
                               st.sampled_from(["tls", "nats"])), min_size=1, max_size=4).map(tuple),
    "expires_at": st.integers(0, 2**40), "reusable": st.booleans(),
    "labels": st.lists(st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True), max_size=5).map(tuple),
})
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(fields=tokens)
def test_every_token_round_trips(ca, fields) -> None:
    der, key = ca
    token = make(der, **fields)
    text = encode_token(token, key)
    assert text.startswith("SJ1") and set(text[3:]) <= set(ALPHABET)  # QR alphanumeric mode holds it
    assert decode_token(text) == token
    assert decode_token(" \n".join(text[i:i + 60] for i in range(0, len(text), 60)).lower()) == token  # as copied


@pytest.fixture(scope="module")
def signed(ca) -> tuple[JoinToken, str]:
    token = make(ca[0])
    return token, encode_token(token, ca[1])  # once: ECDSA signatures differ in length from one signing to the next


@SETTINGS
@given(data=st.data())
def test_no_change_to_a_token_gives_another_token(signed, data) -> None:
    token, text = signed
    where = data.draw(st.integers(3, len(text) - 1))
    replacement = data.draw(st.sampled_from(ALPHABET).filter(lambda c: c != text[where]))
    changed = text[:where] + replacement + text[where + 1:]
    try:
        decoded = decode_token(changed)
    except InvalidJoinToken:
        return
    assert decoded == token  # only the unused low bits of the last base32 character may change harmlessly


@SETTINGS
@given(cut=st.integers(1, 200))
def test_a_token_cut_short_is_refused(signed, cut) -> None:
    _token, text = signed
    with pytest.raises(InvalidJoinToken):
        decode_token(text[:-cut])


def test_a_ca_that_does_not_match_the_fingerprint_is_refused(ca, other_ca) -> None:
    der, key = ca
    wrong = make(der, ca_sha256=hashlib.sha256(other_ca[0]).digest())
    with pytest.raises(InvalidJoinToken, match="does not match its fingerprint"):
        decode_token(encode_token(wrong, key))


def test_a_token_signed_by_another_key_than_its_ca_is_refused(ca, other_ca) -> None:
    der, _key = ca
    with pytest.raises(InvalidJoinToken, match="signature does not verify"):
        decode_token(encode_token(make(der), other_ca[1]))


@pytest.mark.parametrize(("text", "why"), [("", "not a stoker join token"), ("stk_abc", "not a stoker join token"),
                                           ("SJ1", "damaged"), ("SJ1AAAA", "damaged"), ("SJ1!!", "damaged")])
def test_text_that_is_not_a_token_is_refused_in_one_line(text: str, why: str) -> None:
    with pytest.raises(InvalidJoinToken, match=why) as caught:
        decode_token(text)
    assert "\n" not in str(caught.value)


def test_an_expired_token_is_refused_and_a_live_one_is_not(ca) -> None:
    token = make(ca[0])
    jointoken.check_expiry(token, T0 + timedelta(minutes=59))
    with pytest.raises(InvalidJoinToken, match="expired at 2026-01-01 01:00 UTC"):
        jointoken.check_expiry(token, T0 + timedelta(hours=1))


def test_the_carried_ca_is_the_platform_ca_as_pem(ca) -> None:
    token = make(ca[0])
    assert pki.fingerprint(ca[0]) == token.fingerprint
    assert jointoken.ca_pem(token).startswith(b"-----BEGIN CERTIFICATE-----")
