"""The event log on JetStream: append with optimistic concurrency and dedup, load, read, subscribe."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError, ServiceUnavailableError

from contracts.base import Event, uuid7
from contracts.codec import MalformedEvent, decode_event, encode
from contracts.subjects import MAX_EVENT_BYTES, Topology
from eventstore.observability import get_logger, tracer
from eventstore.records import (
    CAUSATION,
    CORRELATION,
    EXPECTED_SUBJECT_SEQ,
    MSG_ID,
    SCHEMA,
    TYPE,
    AppendError,
    AppendResult,
    ConcurrencyError,
    EventTooLarge,
    PendingAppend,
    StoredEvent,
    event_headers,
)

__all__ = [
    "CAUSATION", "CORRELATION", "EXPECTED_SUBJECT_SEQ", "MSG_ID", "SCHEMA", "TYPE", "AppendError",
    "AppendResult", "ConcurrencyError", "EventTooLarge", "JetStreamLog", "PendingAppend", "StoredEvent",
    "event_headers",
]

log = get_logger(component="eventlog")

CONCURRENCY_CODES = {10071, 10164}
DUPLICATE_IN_BATCH = 10201
MAX_BATCH = 500
WARNED_LIMIT = 10_000  # malformed sequences a reader remembers having logged (then it logs again)


class JetStreamLog:
    """stoker's event log: one JetStream stream, one subject per aggregate, sequence = version."""

    def __init__(self, nc: Client, topology: Topology | None = None, *, timeout: float = 5.0,
                 retries: int = 5) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.topology = topology or Topology()
        self.timeout = timeout
        self.retries = retries
        self.malformed_seen = 0  # distinct malformed messages this reader has skipped (and logged once)
        self._warned: set[int] = set()

    async def ensure_streams(self, replicas: int = 1) -> None:
        """Create (or update) the event, telemetry and dispatch streams."""
        from eventstore.streams import ensure_streams

        await ensure_streams(self.js, self.topology, replicas)

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
        flat = [(a, e) for a in appends for e in a.events]
        if not flat:
            raise ValueError("append needs at least one event")
        if len(flat) > MAX_BATCH:
            raise ValueError(f"one append holds at most {MAX_BATCH} events, got {len(flat)}")
        ids = list(event_ids) if event_ids is not None else [uuid7() for _ in flat]
        if len(ids) != len(flat):
            raise ValueError("event_ids must name one id per event")
        types = sorted({type(e).__name__ for _a, e in flat})
        with tracer().start_as_current_span("stoker.append", context=appends[0].trace,
                                            attributes={"stoker.events": len(flat), "stoker.event_types": types}):
            messages = self._messages(flat, ids, correlation_id, causation_id)
            return await self._publish_with_retries(messages, appends)

    def _messages(self, flat: list[tuple[PendingAppend, Event]], ids: list[str], correlation_id: str | None,
                  causation_id: str | None) -> list[tuple[str, bytes, dict[str, str]]]:
        messages, guarded = [], set()
        for (pending, event), event_id in zip(flat, ids, strict=True):
            if event.aggregate != pending.aggregate or event.aggregate_id != pending.aggregate_id:
                raise ValueError(f"{type(event).__name__} of {event.aggregate_id!r} does not belong to "
                                 f"{pending.aggregate} {pending.aggregate_id!r}")
            subject = self.topology.events(pending.aggregate, pending.aggregate_id)
            data = encode(event)
            if len(data) > MAX_EVENT_BYTES - 4096:
                raise EventTooLarge(f"{type(event).__name__} is {len(data)} bytes; events are limited to "
                                    f"{MAX_EVENT_BYTES - 4096} (store large data as a blob and reference it)")
            # Decisions of other commands in the same batch keep their own trace.
            trace = pending.trace if pending.trace is not None and pending is not flat[0][0] else None
            headers = event_headers(event, event_id, correlation_id or ids[0], causation_id, trace)
            if pending.expected_version is not None and subject not in guarded:
                # Only the aggregate's first event carries the guard; the rest follow it atomically.
                headers[EXPECTED_SUBJECT_SEQ] = str(pending.expected_version)
                guarded.add(subject)
            messages.append((subject, data, headers))
        return messages

    async def _publish_with_retries(self, messages: list[tuple[str, bytes, dict[str, str]]],
                                    appends: Sequence[PendingAppend]) -> AppendResult:
        batch_id = messages[0][2][MSG_ID]
        for attempt in range(self.retries + 1):
            try:
                reply = await self._publish_batch(batch_id, messages)
            except (nats.errors.TimeoutError, nats.errors.ConnectionClosedError,
                    nats.errors.ConnectionReconnectingError, nats.errors.NoRespondersError) as exc:
                # Same message ids on every try: a retry after a lost acknowledgement is deduplicated.
                # No responders is retried too: a cluster electing a stream leader has none for a moment.
                if attempt < self.retries:
                    await asyncio.sleep(min(2.0, 0.25 * 2**attempt))
                    continue
                if isinstance(exc, nats.errors.NoRespondersError):
                    raise AppendError(f"no stream listens on {messages[0][0]}: create it with "
                                      "ensure_streams (stoker up does)") from None
                raise AppendError(f"no acknowledgement from JetStream after {attempt + 1} tries: "
                                  f"{exc.__class__.__name__}") from None
            return await self._result(reply, messages, appends)
        raise AssertionError("unreachable")

    async def _publish_batch(self, batch_id: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> dict:
        if len(messages) == 1:
            subject, data, headers = messages[0]
            reply = await self.nc.request(subject, data, timeout=self.timeout, headers=headers)
            return json.loads(reply.data)
        last = len(messages)
        for number, (subject, data, headers) in enumerate(messages, 1):
            batch_headers = {**headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            if number < last:
                await self.nc.publish(subject, data, headers=batch_headers)
            else:
                batch_headers["Nats-Batch-Commit"] = "1"
                reply = await self.nc.request(subject, data, timeout=self.timeout, headers=batch_headers)
                return json.loads(reply.data)
        raise AssertionError("unreachable")

    async def _result(self, reply: dict, messages: list[tuple[str, bytes, dict[str, str]]],
                      appends: Sequence[PendingAppend]) -> AppendResult:
        error = reply.get("error")
        if error:
            code = error.get("err_code")
            if code in CONCURRENCY_CODES:
                if len(messages) == 1 and await self._is_last_on_subject(messages[0]):
                    # A single publish checks the version before dedup: a retried append lands here.
                    return await self._duplicate_result(messages, appends)
                pending = next((a for a in appends if a.expected_version is not None), appends[0])
                raise ConcurrencyError(messages[0][0], pending.expected_version, error.get("description", ""))
            if code == DUPLICATE_IN_BATCH and "duplicate" in error.get("description", ""):
                return await self._duplicate_result(messages, appends)
            raise AppendError(f"JetStream refused the append: {error.get('description')} (code {code})")
        last_seq = int(reply["seq"])
        if reply.get("duplicate"):
            return await self._duplicate_result(messages, appends)
        versions: dict[str, int] = {}
        for offset, (subject, _data, _headers) in enumerate(messages):
            versions[subject] = last_seq - (len(messages) - 1 - offset)
        return AppendResult(last_seq, _by_aggregate(versions, self.topology))

    async def _duplicate_result(self, messages: list[tuple[str, bytes, dict[str, str]]],
                                appends: Sequence[PendingAppend]) -> AppendResult:
        versions = {}
        for subject in {m[0] for m in messages}:
            versions[subject] = await self.subject_version(subject)
        return AppendResult(max(versions.values()), _by_aggregate(versions, self.topology), duplicate=True)

    async def _is_last_on_subject(self, message: tuple[str, bytes, dict[str, str]]) -> bool:
        try:
            last = await self.js.get_last_msg(self.topology.events_stream, message[0], direct=True)
        except NotFoundError:
            return False
        return (last.headers or {}).get(MSG_ID) == message[2][MSG_ID]

    async def subject_version(self, subject: str) -> int:
        """The stream sequence of the last event on `subject` (0 when there is none)."""
        try:
            msg = await self.js.get_last_msg(self.topology.events_stream, subject, direct=True)
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def version(self, aggregate: str, aggregate_id: str) -> int:
        """The current version of one aggregate (0 when it has no events)."""
        return await self.subject_version(self.topology.events(aggregate, aggregate_id))

    async def last_seq(self, stream: str | None = None) -> int:
        """The last sequence number of the event stream (or of `stream`); 0 when empty."""
        info = await self.js.stream_info(stream or self.topology.events_stream)
        return int(info.state.last_seq)

    async def appended_at(self, seq: int, stream: str | None = None) -> datetime | None:
        """When the message at sequence `seq` was stored (None when there is none)."""
        try:
            msg = await self.js.get_msg(stream or self.topology.events_stream, seq=max(1, seq), direct=True)
        except NotFoundError:
            return None
        return msg.time

    async def first_match(self, subject: str, start: int, stream: str | None = None) -> int | None:
        """The sequence of the first message on `subject` (wildcards allowed) at or after `start`."""
        try:
            msg = await self.js.get_msg(stream or self.topology.events_stream, seq=max(1, start), subject=subject,
                                        next=True, direct=True)
        except NotFoundError:
            return None
        return int(msg.seq) if msg.seq else None

    async def load(self, aggregate: str, aggregate_id: str) -> tuple[list[StoredEvent], int]:
        """Every event of one aggregate, oldest first, and its version.

        The version is the sequence of the subject's last message, malformed or not: the next append's
        expected version is what JetStream checks, and a skipped message counts there too.
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

    async def read_raw(self, from_seq: int = 1, *, until_seq: int | None = None, filter_subject: str | None = None,
                       stream: str | None = None) -> AsyncIterator[Msg]:
        """Raw messages from `from_seq` to the end as of now, or `until_seq` (malformed ones included)."""
        end = until_seq if until_seq is not None else await self.last_seq(stream)
        if end < from_seq:
            return
        if filter_subject is not None:
            # An ordered consumer waits forever when nothing matches: look before subscribing.
            first = await self.first_match(filter_subject, from_seq, stream)
            if first is None or first > end:
                return
            from_seq = first
        async for msg in self.follow_raw(from_seq, filter_subject=filter_subject, stream=stream):
            seq = msg.metadata.sequence.stream
            if seq > end:
                return
            yield msg
            if seq >= end or msg.metadata.num_pending == 0:
                return

    async def follow_raw(self, from_seq: int = 1, *, filter_subject: str | None = None,
                         stream: str | None = None) -> AsyncIterator[Msg]:
        """Raw messages from `from_seq` on, following live, through an ordered consumer."""
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, from_seq))
        if from_seq <= 1:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        sub = await self._ordered_subscription(filter_subject or self.topology.all_events,
                                               stream or self.topology.events_stream, config)
        try:
            while True:
                yield await sub.next_msg(timeout=None)
        finally:
            await _quiet_unsubscribe(sub)

    async def _ordered_subscription(self, subject: str, stream: str, config: ConsumerConfig,
                                    attempts: int = 20) -> Any:
        # A cluster electing a new stream leader (a node just died) answers consumer creation late or
        # with 503 for a few seconds; retry through that rather than fail a reader.
        for attempt in range(attempts):
            try:
                return await self.js.subscribe(subject, stream=stream, ordered_consumer=True, config=config,
                                               pending_msgs_limit=256 * 1024,
                                               pending_bytes_limit=256 * 1024 * 1024)
            except (nats.errors.TimeoutError, ServiceUnavailableError):
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    def decode(self, msg: Msg) -> StoredEvent | None:
        """Turn a raw message into a StoredEvent; a malformed one is skipped (None), logged once per reader."""
        decoded = self.decode_or_reason(msg)
        return decoded if isinstance(decoded, StoredEvent) else None

    def decode_or_reason(self, msg: Msg) -> StoredEvent | MalformedEvent:
        """Like `decode`, but a malformed message comes back as the MalformedEvent saying why."""
        try:
            return self.decode_strict(msg)
        except MalformedEvent as exc:
            self._skipped(msg, exc)
            return exc

    def _skipped(self, msg: Msg, exc: MalformedEvent) -> None:
        seq = msg.metadata.sequence.stream
        if seq in self._warned:
            return  # a replay (a rebuild, a reload) meets it again: said already
        if len(self._warned) >= WARNED_LIMIT:
            self._warned.clear()
        self._warned.add(seq)
        self.malformed_seen += 1
        log.warning("skipping malformed event", seq=seq, subject=msg.subject, reason=str(exc))

    def decode_strict(self, msg: Msg) -> StoredEvent:
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


def _by_aggregate(versions: dict[str, int], topology: Topology) -> dict[str, int]:
    out = {}
    for subject, version in versions.items():
        where = topology.parse_event_subject(subject)
        out[f"{where[0]}.{where[1]}" if where else subject] = version
    return out


async def _quiet_unsubscribe(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError, asyncio.CancelledError):
        pass
