"""Who may connect to NATS, as the log says: a fold of the `credential` and `jointoken` events. Pure: no I/O,
no clock (the caller says `now`).

Every node of a cluster across machines authenticates its own clients from its own `authorization` block
(eventstore.credentials), so every node folds these events (ops.members) and lets in what they say: the
workers the admin admitted (`WorkerCredentialIssued`, the latest key wins) or that joined with a token
(`JoinTokenUsed`), less those revoked since (`WorkerCredentialRevoked`, until admitted again); and the join
tokens that may still be claimed. A worker the log never named (a node's bundle, a data dir's own worker
before it was recorded) is left as it is: the log speaks only for what it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import msgspec

from contracts import events as ev
from eventstore.credentials import Members
from ops import join_domain
from ops.join_domain import JoinTokens

AGGREGATES = ("credential", "jointoken")  # the event kinds the fold reads


class Credentials(msgspec.Struct, frozen=True, kw_only=True):
    """The folded state: admitted workers (id → key), worker ids revoked and not admitted again, join tokens."""

    workers: Mapping[str, str] = {}
    revoked: frozenset[str] = frozenset()
    tokens: JoinTokens = {}


def initial_state() -> Credentials:
    """Nobody named yet."""
    return Credentials()


def evolve(state: Credentials, event: ev.Event) -> Credentials:
    """The state after one event (events of other kinds leave it as it is)."""
    if isinstance(event, ev.WorkerCredentialIssued):
        return _admit(state, event.worker_id, event.key)
    if isinstance(event, ev.WorkerCredentialRevoked):
        workers = {w: k for w, k in state.workers.items() if w != event.worker_id}
        return msgspec.structs.replace(state, workers=workers, revoked=state.revoked | {event.worker_id})
    if isinstance(event, ev.JoinTokenEvent):
        known = event.token_id in state.tokens
        state = msgspec.structs.replace(state, tokens=join_domain.evolve(state.tokens, event))
        if isinstance(event, ev.JoinTokenUsed) and known:
            return _admit(state, event.worker_id, event.worker_key)
    return state


def _admit(state: Credentials, worker_id: str, key: str) -> Credentials:
    return msgspec.structs.replace(state, workers={**state.workers, worker_id: key},
                                   revoked=state.revoked - {worker_id})


def members(state: Credentials, now: datetime) -> Members:
    """The users a node must let in (and those it must not) at `now`: every admitted worker, every revoked
    worker id, the join tokens that may be claimed, and the keys of those that can claim no more."""
    joins = {r.token_id: r.key for r in state.tokens.values() if r.status(now) == "active"}
    return Members(workers=dict(state.workers), revoked=state.revoked, joins=joins,
                   removed_keys=frozenset(join_domain.keys_to_drop(state.tokens, now)))


def next_change(state: Credentials, now: datetime) -> datetime | None:
    """When `members` changes with no new event: the next expiry of a token that may be claimed now."""
    ahead = [r.expires_at for r in state.tokens.values() if r.status(now) == "active"]
    return min(ahead, default=None)
