"""One way to decide and append: fold, decide, append with expected versions, and on a conflict fold again.

A decider is pure: `decide(state) -> events` and `evolve(state, event) -> state`. `run_decision`
does the I/O around it for one aggregate type, whether a decision touches one aggregate (revoke a
token) or several (discovery's tick loses many workers; issuing a login token revokes the older
ones). Each event is appended under its own aggregate id with that aggregate's version as the
expected version, so a writer that moved any of them on makes the append fail; the state is then
loaded again and the decision made again on it.

The scheduler does not use this: it keeps a live board and commits its decisions in groups
(services/scheduler/committer.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, NamedTuple, TypeVar

from contracts.base import Event, uuid7
from eventstore.logcore import MAX_BATCH
from eventstore.observability import get_logger
from eventstore.ports import EventLog
from eventstore.records import ConcurrencyError, PendingAppend

log = get_logger(component="decision")
S = TypeVar("S")
TRIES = 3


class Folded(NamedTuple, Generic[S]):
    """A decider's state and the version of each aggregate it was folded from (absent: 0, none yet)."""

    state: S
    versions: Mapping[str, int]


class Decided(NamedTuple, Generic[S]):
    """What a decision appended, the state after it, and the last sequence written (0: nothing)."""

    folded: Folded[S]
    events: list[Event]
    last_seq: int


def _checked(event: Event) -> bool:
    return True


async def run_decision(event_log: EventLog, aggregate: str, decide: Callable[[S], Sequence[Event]],
                       evolve: Callable[[S, Event], S], *, load: Callable[[], Awaitable[Folded[S]]],
                       start: Folded[S] | None = None, checked: Callable[[Event], bool] = _checked,
                       atomic: bool = True, tries: int = TRIES,
                       retry_on: tuple[type[Exception], ...] = (ConcurrencyError,)) -> Decided[S]:
    """Decide on `start` (or what `load` gives) and append; after a `retry_on` failure, load and decide again.

    `atomic`: the whole decision is one batch (several, of MAX_BATCH events each, when it is larger);
    otherwise one append per event, in order. `checked(event)` False: that event is appended
    without an expected version (the decider says a repeat is harmless). The last failure is raised
    (after loading once more, so a caller keeping the state holds the log's).
    """
    folded = start if start is not None else await load()
    for attempt in range(tries):
        events = list(decide(folded.state))  # decided again on the re-folded state after a failure
        if not events:
            return Decided(folded, [], 0)
        try:
            if atomic:
                return await _append_together(event_log, aggregate, folded, events, evolve, checked)
            return await _append_each(event_log, aggregate, folded, events, evolve, checked)
        except retry_on as exc:
            log.warning("append failed, folding again", aggregate=aggregate, attempt=attempt + 1, error=str(exc))
            folded = await load()
            if attempt == tries - 1:
                raise
    raise AssertionError("unreachable")


async def _append_together(event_log: EventLog, aggregate: str, folded: Folded[S], events: list[Event],
                           evolve: Callable[[S, Event], S], checked: Callable[[Event], bool]) -> Decided[S]:
    guarded: set[str] = set()
    appends = []
    for event in events:
        key = event.aggregate_id
        expected = folded.versions.get(key, 0) if checked(event) and key not in guarded else None
        guarded.add(key)
        appends.append(PendingAppend(aggregate, key, [event], expected))
    versions, last_seq = dict(folded.versions), 0
    for start in range(0, len(appends), MAX_BATCH):
        result = await event_log.append_batch(appends[start:start + MAX_BATCH])
        last_seq = result.last_seq
        _note_versions(versions, aggregate, result.versions)
    return Decided(Folded(_fold(folded.state, events, evolve), versions), events, last_seq)


async def _append_each(event_log: EventLog, aggregate: str, folded: Folded[S], events: list[Event],
                       evolve: Callable[[S, Event], S], checked: Callable[[Event], bool]) -> Decided[S]:
    state, versions, last_seq = folded.state, dict(folded.versions), 0
    for event in events:
        key = event.aggregate_id
        expected = versions.get(key, 0) if checked(event) else None
        result = await event_log.append(aggregate, key, [event], expected, event_ids=[uuid7()])
        last_seq = result.last_seq
        versions[key] = result.versions.get(f"{aggregate}.{key}", last_seq)
        state = evolve(state, event)
    return Decided(Folded(state, versions), events, last_seq)


def _note_versions(versions: dict[str, int], aggregate: str, appended: Mapping[str, int]) -> None:
    prefix = f"{aggregate}."
    for key, version in appended.items():
        if key.startswith(prefix):
            versions[key.removeprefix(prefix)] = version


def _fold(state: S, events: Sequence[Event], evolve: Callable[[S, Event], S]) -> S:
    for event in events:
        state = evolve(state, event)
    return state
