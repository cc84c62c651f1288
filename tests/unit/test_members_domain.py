"""Who may connect, as the log says (ops.members_domain): admits, re-admits, revokes, joins, order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from contracts import events as ev
from eventstore.credentials import Members
from ops import members_domain
from ops.joining import new_user_seed, public_key

T0 = datetime(2026, 1, 1, tzinfo=UTC)
KEYS = [public_key(new_user_seed()) for _ in range(4)]
TOKEN_KEY = public_key(new_user_seed())


def fold(*events: ev.Event) -> members_domain.Credentials:
    state = members_domain.initial_state()
    for event in events:
        state = members_domain.evolve(state, event)
    return state


def issued(worker_id: str, key: str) -> ev.WorkerCredentialIssued:
    return ev.WorkerCredentialIssued(worker_id=worker_id, key=key, issued_at=T0)


def revoked(worker_id: str) -> ev.WorkerCredentialRevoked:
    return ev.WorkerCredentialRevoked(worker_id=worker_id, revoked_at=T0)


def token(token_id: str = "t1", reusable: bool = False) -> ev.JoinTokenIssued:
    return ev.JoinTokenIssued(token_id=token_id, key=TOKEN_KEY, reusable=reusable, expires_at=T0 + timedelta(hours=1),
                              issued_at=T0)


def used(worker_id: str, key: str, token_id: str = "t1") -> ev.JoinTokenUsed:
    return ev.JoinTokenUsed(token_id=token_id, worker_id=worker_id, worker_key=key, used_at=T0)


def test_admit_readmit_with_a_new_key_and_revoke() -> None:
    assert members_domain.members(fold(issued("w1", KEYS[0])), T0).workers == {"w1": KEYS[0]}
    assert members_domain.members(fold(issued("w1", KEYS[0]), issued("w1", KEYS[1])), T0).workers == {"w1": KEYS[1]}
    gone = members_domain.members(fold(issued("w1", KEYS[0]), issued("w2", KEYS[2]), revoked("w1")), T0)
    assert gone.workers == {"w2": KEYS[2]} and gone.revoked == {"w1"}
    back = members_domain.members(fold(issued("w1", KEYS[0]), revoked("w1"), issued("w1", KEYS[3])), T0)
    assert back.workers == {"w1": KEYS[3]} and not back.revoked


def test_a_worker_that_joined_is_let_in_and_its_single_use_token_no_more() -> None:
    state = fold(token(), used("w-j", KEYS[0]))
    now = members_domain.members(state, T0)
    assert now.workers == {"w-j": KEYS[0]} and now.joins == {} and now.removed_keys == {TOKEN_KEY}
    assert members_domain.members(fold(token(), used("w-j", KEYS[0]), revoked("w-j")), T0).workers == {}
    assert members_domain.members(fold(used("w-x", KEYS[1], "unknown")), T0) == Members()  # an unknown token


def test_a_join_token_may_be_claimed_until_it_is_revoked_or_expires() -> None:
    assert members_domain.members(fold(token()), T0).joins == {"t1": TOKEN_KEY}
    assert members_domain.next_change(fold(token()), T0) == T0 + timedelta(hours=1)
    late = members_domain.members(fold(token()), T0 + timedelta(hours=2))
    assert late.joins == {} and late.removed_keys == {TOKEN_KEY}
    cut = fold(token(), ev.JoinTokenRevoked(token_id="t1", revoked_at=T0))
    assert members_domain.members(cut, T0).joins == {} and members_domain.next_change(cut, T0) is None
    reusable = members_domain.members(fold(token(reusable=True), used("w-j", KEYS[0])), T0)
    assert reusable.joins == {"t1": TOKEN_KEY} and reusable.workers == {"w-j": KEYS[0]}


def test_other_events_change_nothing() -> None:
    other = ev.TokenRevoked(token_id="x", revoked_at=T0)
    assert fold(other) == members_domain.initial_state()


CHANGES = st.lists(st.tuples(st.sampled_from(["w1", "w2", "w3"]), st.sampled_from([None, *KEYS])), max_size=20)


@given(CHANGES)
def test_the_last_word_on_each_worker_wins(changes: list[tuple[str, str | None]]) -> None:
    events = [issued(w, k) if k is not None else revoked(w) for w, k in changes]
    result = members_domain.members(fold(*events), T0)
    last = dict(changes)
    assert result.workers == {w: k for w, k in last.items() if k is not None}
    assert result.revoked == {w for w, k in last.items() if k is None}
    assert not set(result.workers) & result.revoked


def test_applying_members_changes_the_store_once_and_leaves_what_it_does_not_name(tmp_path) -> None:
    from contracts.subjects import Topology
    from eventstore.credentials import CredentialStore

    store = CredentialStore(tmp_path)
    store.ensure_control_plane()
    store.ensure_worker("local")
    store.write_authorization(Topology())
    wanted = members_domain.members(fold(token(), issued("w1", KEYS[0]), issued("w2", KEYS[1]), revoked("w2")), T0)
    assert store.apply(wanted) and not store.authorization_current(Topology())
    assert store.workers() == {"local": store.workers()["local"], "w1": KEYS[0]} and store.joins() == {"t1": TOKEN_KEY}
    store.write_authorization(Topology())
    assert not store.apply(wanted) and store.authorization_current(Topology())  # idempotent
    assert store.apply(members_domain.members(fold(token(), used("w3", KEYS[2])), T0)) and store.joins() == {}
