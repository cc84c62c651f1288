"""What every event log shares: checking and building appends, decoding raw messages, reading on raw access.

`JetStreamLog` and `MemoryLog` differ only in where messages are kept; the checks on an append,
the headers, the skipping of malformed messages and the way events are loaded and read are here once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from contracts.base import Event, uuid7
from contracts.codec import MalformedEvent, decode_event, encode
from contracts.subjects import MAX_EVENT_BYTES, Topology
from eventstore.observability import get_logger, span, tracing_on
from eventstore.ports import RawMessage
from eventstore.records import (
    EXPECTED_SUBJECT_SEQ,
    MSG_ID,
    SCHEMA,
    TYPE,
    AppendResult,
    EventTooLarge,
    PendingAppend,
    StoredEvent,
    event_headers,
)

log = get_logger(component="eventlog")

MAX_BATCH = 500
WARNED_LIMIT = 10_000  # malformed sequences a reader remembers having logged (then it logs again)
MAX_STORED_EVENT = MAX_EVENT_BYTES - 4096  # room for the headers

Message = tuple[str, bytes, dict[str, str]]  # subject, payload, headers


@dataclass(frozen=True, slots=True)
class Sequences:
    """A message's stream sequence (the consumer one is not kept)."""

    stream: int


@dataclass(frozen=True, slots=True)
class Metadata:
    """Where a stored message sits, when it was stored, and how many follow it."""

    sequence: Sequences
    timestamp: datetime | None
    num_pending: int = 0


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A raw message shaped like a nats `Msg` (what `raw_at` and the memory log hand out)."""

    subject: str
    data: bytes
    headers: dict[str, str] | None
    metadata: Metadata


def prepare_messages(topology: Topology, appends: Sequence[PendingAppend], correlation_id: str | None,
                     causation_id: str | None, event_ids: Sequence[str] | None) -> list[Message]:
    """Check an append and turn it into messages; each aggregate's first one carries the version guard."""
    flat = [(a, e) for a in appends for e in a.events]
    if not flat:
        raise ValueError("append needs at least one event")
    if len(flat) > MAX_BATCH:
        raise ValueError(f"one append holds at most {MAX_BATCH} events, got {len(flat)}")
    ids = list(event_ids) if event_ids is not None else [uuid7() for _ in flat]
    if len(ids) != len(flat):
        raise ValueError("event_ids must name one id per event")
    messages, guarded = [], set()
    for (pending, event), event_id in zip(flat, ids, strict=True):
        # Decisions of other commands in the same batch keep their own trace; the first one's is the span's.
        trace = pending.trace if pending.trace is not None and pending is not flat[0][0] else None
        subject = topology.events(pending.aggregate, pending.aggregate_id)
        messages.append(_message(subject, pending, event, event_id, correlation_id or ids[0], causation_id,
                                 guard=subject_guard(subject, pending, guarded), trace=trace))
    return messages


def subject_guard(subject: str, pending: PendingAppend, guarded: set[str]) -> int | None:
    """The expected version to put on this message: only the aggregate's first one carries it."""
    if pending.expected_version is None or subject in guarded:
        return None
    guarded.add(subject)
    return pending.expected_version


def _message(subject: str, pending: PendingAppend, event: Event, event_id: str, correlation_id: str,
             causation_id: str | None, guard: int | None, trace: Any = None) -> Message:
    if event.aggregate != pending.aggregate or event.aggregate_id != pending.aggregate_id:
        raise ValueError(f"{type(event).__name__} of {event.aggregate_id!r} does not belong to "
                         f"{pending.aggregate} {pending.aggregate_id!r}")
    data = encode(event)
    if len(data) > MAX_STORED_EVENT:
        raise EventTooLarge(f"{type(event).__name__} is {len(data)} bytes; events are limited to "
                            f"{MAX_STORED_EVENT} (store large data as a blob and reference it)")
    headers = event_headers(event, event_id, correlation_id, causation_id, trace)
    if guard is not None:
        headers[EXPECTED_SUBJECT_SEQ] = str(guard)
    return subject, data, headers


def by_aggregate(versions: dict[str, int], topology: Topology) -> dict[str, int]:
    """{subject: version} as {"aggregate.id": version}."""
    out = {}
    for subject, version in versions.items():
        where = topology.parse_event_subject(subject)
        out[f"{where[0]}.{where[1]}" if where else subject] = version
    return out


class LogCore:
    """Appending, loading, reading and decoding, given a store for checked messages (`_store`) and raw
    access (`subject_version`, `read_raw`, `follow_raw`)."""

    topology: Topology

    def __init__(self, topology: Topology | None = None) -> None:
        self.topology = topology or Topology()
        self.malformed_seen = 0  # distinct malformed messages this reader has skipped (and logged once)
        self._warned: set[int] = set()

    async def _store(self, messages: list[Message],
                     appends: Sequence[PendingAppend]) -> AppendResult:  # pragma: no cover - each log has its own
        raise NotImplementedError

    async def subject_version(self, subject: str) -> int:  # pragma: no cover
        raise NotImplementedError

    def read_raw(self, from_seq: int = 1, *, until_seq: int | None = None, filter_subject: str | None = None,
                 stream: str | None = None) -> AsyncIterator[RawMessage]:  # pragma: no cover
        raise NotImplementedError

    def follow_raw(self, from_seq: int = 1, *, filter_subject: str | None = None,
                   stream: str | None = None) -> AsyncIterator[RawMessage]:  # pragma: no cover
        raise NotImplementedError

    async def append(self, aggregate: str, aggregate_id: str, events: Sequence[Event],
                     expected_version: int | None = None, *, correlation_id: str | None = None,
                     causation_id: str | None = None, event_ids: Sequence[str] | None = None) -> AppendResult:
        """Append one decision's events to one aggregate, atomically, if it is still at `expected_version`."""
        return await self.append_batch([PendingAppend(aggregate, aggregate_id, events, expected_version)],
                                       correlation_id=correlation_id, causation_id=causation_id,
                                       event_ids=event_ids)

    async def append_batch(self, appends: Sequence[PendingAppend], *, correlation_id: str | None = None,
                           causation_id: str | None = None,
                           event_ids: Sequence[str] | None = None) -> AppendResult:
        """Append events of several aggregates as one atomic batch: all of them land, or none."""
        attributes = {"stoker.events": sum(len(a.events) for a in appends),
                      "stoker.event_types": sorted({type(e).__name__ for a in appends for e in a.events})
                      } if tracing_on() else None
        # Without tracing `span` only makes the first command's context current: its events carry that trace.
        with span("stoker.append", context=appends[0].trace if appends else None, attributes=attributes):
            messages = prepare_messages(self.topology, appends, correlation_id, causation_id, event_ids)
            return await self._store(messages, appends)

    async def version(self, aggregate: str, aggregate_id: str) -> int:
        """The current version of one aggregate (0 when it has no events)."""
        return await self.subject_version(self.topology.events(aggregate, aggregate_id))

    async def load(self, aggregate: str, aggregate_id: str) -> tuple[list[StoredEvent], int]:
        """Every event of one aggregate, oldest first, and its version.

        The version is the sequence of the subject's last message, malformed or not: the next append's
        expected version is what the log checks, and a skipped message counts there too.
        """
        subject = self.topology.events(aggregate, aggregate_id)
        version = await self.subject_version(subject)
        if version == 0:
            return [], 0
        events = [e async for e in self.read(1, until_seq=version, filter_subject=subject)]
        return events, version

    async def read(self, from_seq: int = 1, *, until_seq: int | None = None,
                   filter_subject: str | None = None) -> AsyncIterator[StoredEvent]:
        """Replay events from `from_seq` up to what the stream holds now (or `until_seq`), then stop."""
        async for msg in self.read_raw(from_seq, until_seq=until_seq, filter_subject=filter_subject):
            stored = self.decode(msg)
            if stored is not None:
                yield stored

    async def subscribe(self, from_seq: int = 1, *,
                        filter_subject: str | None = None) -> AsyncIterator[StoredEvent]:
        """Replay from `from_seq`, then follow new events as they are appended, forever."""
        async for msg in self.follow_raw(from_seq, filter_subject=filter_subject):
            stored = self.decode(msg)
            if stored is not None:
                yield stored

    def decode(self, msg: RawMessage) -> StoredEvent | None:
        """Turn a raw message into a StoredEvent; a malformed one is skipped (None), logged once per reader."""
        decoded = self.decode_or_reason(msg)
        return decoded if isinstance(decoded, StoredEvent) else None

    def decode_or_reason(self, msg: RawMessage) -> StoredEvent | MalformedEvent:
        """Like `decode`, but a malformed message comes back as the MalformedEvent saying why."""
        try:
            return self.decode_strict(msg)
        except MalformedEvent as exc:
            self._skipped(msg, exc)
            return exc

    def _skipped(self, msg: RawMessage, exc: MalformedEvent) -> None:
        seq = msg.metadata.sequence.stream
        if seq in self._warned:
            return  # a replay (a rebuild, a reload) meets it again: said already
        if len(self._warned) >= WARNED_LIMIT:
            self._warned.clear()
        self._warned.add(seq)
        self.malformed_seen += 1
        log.warning("skipping malformed event", seq=seq, subject=msg.subject, reason=str(exc))

    def decode_strict(self, msg: RawMessage) -> StoredEvent:
        """Turn a raw message into a StoredEvent or raise MalformedEvent saying why."""
        headers = msg.headers or {}
        where = self.topology.parse_event_subject(msg.subject)
        if where is None:
            raise MalformedEvent(f"subject {msg.subject!r} is not an event subject")
        event = decode_event(headers.get(TYPE), headers.get(SCHEMA), msg.data)
        if event.aggregate != where[0] or event.aggregate_id != where[1]:
            raise MalformedEvent(f"{type(event).__name__} of {event.aggregate} {event.aggregate_id} "
                                 f"stored under {msg.subject}")
        meta = msg.metadata
        return StoredEvent(seq=meta.sequence.stream, subject=msg.subject, aggregate=where[0],
                           aggregate_id=where[1], event=event, event_id=headers.get(MSG_ID, ""),
                           schema=int(headers.get(SCHEMA, event.schema)), time=meta.timestamp,
                           headers=dict(headers))
