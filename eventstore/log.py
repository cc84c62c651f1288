"""The event log on JetStream: append with optimistic concurrency and dedup, load, read, subscribe."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import msgspec
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError, NotFoundError, ServiceUnavailableError

from contracts.subjects import Topology
from eventstore.logcore import (
    MAX_BATCH,
    LogCore,
    Message,
    Metadata,
    Sequences,
    StoredMessage,
    by_aggregate,
)
from eventstore.ports import StreamMissing, StreamState
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
    "CAUSATION", "CORRELATION", "EXPECTED_SUBJECT_SEQ", "MAX_BATCH", "MSG_ID", "SCHEMA", "TYPE", "AppendError",
    "AppendResult", "ConcurrencyError", "EventTooLarge", "JetStreamLog", "PendingAppend", "StoredEvent",
    "event_headers",
]

CONCURRENCY_CODES = {10071, 10164}
DUPLICATE_IN_BATCH = 10201
_decode_reply = msgspec.json.Decoder().decode  # JetStream's acknowledgement, a small JSON object


def _appended(last_seq: int, appends: Sequence[PendingAppend]) -> AppendResult:
    """The result of a stored append: its messages are the appends' events in order, the last one at last_seq."""
    keys = [f"{a.aggregate}.{a.aggregate_id}" for a in appends for _event in a.events]
    count = len(keys)
    return AppendResult(last_seq, {key: last_seq - (count - 1 - offset) for offset, key in enumerate(keys)})


class JetStreamLog(LogCore):
    """stoker's event log (an `EventLog`): one JetStream stream, one subject per aggregate, sequence = version."""

    def __init__(self, nc: Client, topology: Topology | None = None, *, timeout: float = 5.0,
                 retries: int = 5) -> None:
        super().__init__(topology)
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)
        self.timeout = timeout
        self.retries = retries

    async def require_streams(self, names: list[str]) -> None:
        """Check that the named streams exist; StreamMissing (saying who makes them) when one does not."""
        from eventstore.streams import require_streams

        await require_streams(self.js, names)

    async def ensure_streams(self, replicas: int = 1) -> None:
        """Create (or update) every stream and bucket: the event, telemetry and dispatch streams, the lease and
        snapshot KV buckets and the checkpoint object store. The admin identity's job (`stoker up` does it)."""
        from eventstore.streams import ensure_streams

        await ensure_streams(self.js, self.topology, replicas)

    async def append_raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                         stream: str | None = None) -> int:
        """Store bytes as they are (an import); the stream is the one whose subjects hold `subject`."""
        try:
            ack = await self.js.publish(subject, data, headers=headers, stream=stream)
        except APIError as exc:
            if exc.err_code in CONCURRENCY_CODES:
                expected = (headers or {}).get(EXPECTED_SUBJECT_SEQ)
                raise ConcurrencyError(subject, int(expected) if expected else None, exc.description or "") from None
            raise AppendError(f"JetStream refused the append: {exc.description} (code {exc.err_code})") from None
        return int(ack.seq)

    async def _store(self, messages: list[Message], appends: Sequence[PendingAppend]) -> AppendResult:
        """Publish the messages (one, or one atomic batch) until JetStream answers, retrying a lost answer."""
        for attempt in range(self.retries + 1):
            try:
                if len(messages) == 1:
                    subject, data, headers = messages[0]
                    reply = _decode_reply((await self.nc.request(subject, data, timeout=self.timeout,
                                                                 headers=headers)).data)
                else:
                    reply = await self._publish_batch(messages)
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
            if reply.get("error") or reply.get("duplicate"):
                return await self._refused_or_repeated(reply, messages, appends)
            return _appended(int(reply["seq"]), appends)
        raise AssertionError("unreachable")

    async def _publish_batch(self, messages: list[Message]) -> dict:
        batch_id = messages[0][2][MSG_ID]
        last = len(messages)
        for number, (subject, data, headers) in enumerate(messages, 1):
            batch_headers = {**headers, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            if number < last:
                await self.nc.publish(subject, data, headers=batch_headers)
            else:
                batch_headers["Nats-Batch-Commit"] = "1"
                reply = await self.nc.request(subject, data, timeout=self.timeout, headers=batch_headers)
                return _decode_reply(reply.data)
        raise AssertionError("unreachable")

    async def _refused_or_repeated(self, reply: dict, messages: list[Message],
                                   appends: Sequence[PendingAppend]) -> AppendResult:
        """JetStream's answer to an append it refused (a version conflict, a limit) or had stored already."""
        error = reply.get("error")
        if not error:
            return await self._duplicate_result(messages, appends)
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

    async def _duplicate_result(self, messages: list[Message],
                                appends: Sequence[PendingAppend]) -> AppendResult:
        versions = {}
        for subject in {m[0] for m in messages}:
            versions[subject] = await self.subject_version(subject)
        return AppendResult(max(versions.values()), by_aggregate(versions, self.topology), duplicate=True)

    async def _is_last_on_subject(self, message: Message) -> bool:
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

    async def last_seq(self, stream: str | None = None) -> int:
        """The last sequence number of the event stream (or of `stream`); 0 when empty."""
        info = await self.js.stream_info(stream or self.topology.events_stream)
        return int(info.state.last_seq)

    async def stream_state(self, stream: str | None = None) -> StreamState:
        """Message count and sequence range of the event stream (or `stream`); StreamMissing if absent."""
        name = stream or self.topology.events_stream
        try:
            info = await self.js.stream_info(name)
        except NotFoundError:
            raise StreamMissing(f"no stream {name}") from None
        state = info.state
        return StreamState(int(state.messages), int(state.first_seq), int(state.last_seq))

    async def has_events(self, filter_subject: str) -> bool:
        """Whether any message of the event stream is on `filter_subject` (False when there is no stream)."""
        try:
            info = await self.js.stream_info(self.topology.events_stream, subjects_filter=filter_subject)
        except NotFoundError:
            return False
        return bool(info.state.messages) and bool(info.state.subjects)

    async def raw_at(self, seq: int, stream: str | None = None) -> StoredMessage | None:
        """The message at sequence `seq`, as stored (None when there is none)."""
        try:
            msg = await self.js.get_msg(stream or self.topology.events_stream, seq)
        except NotFoundError:
            return None
        return StoredMessage(subject=msg.subject or "", data=msg.data or b"", headers=msg.headers,
                             metadata=Metadata(sequence=Sequences(int(msg.seq or seq)), timestamp=msg.time))

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
            async for msg in _messages(sub):
                yield msg
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


async def _messages(sub: Any) -> AsyncIterator[Msg]:
    """An ordered push subscription's messages, as `next_msg` hands them out, but those already received in one go.

    `next_msg` makes a task (and a uuid4 name for it) per message: a third of a replay's time. Where the
    client's subscription has the queue it fills (nats-py's `_pending_queue`), what is already in it is
    taken directly, yielding to the event loop between two messages as `next_msg` does (whoever a reader
    feeds, a WebSocket client's queue, must get its turn), and the flow-control reply `next_msg` would
    send once that queue is empty is sent here; without it (another client version), every message goes
    through `next_msg`.
    """
    inner = getattr(sub, "_sub", None)
    queue: asyncio.Queue | None = getattr(inner, "_pending_queue", None)
    direct = isinstance(queue, asyncio.Queue) and hasattr(inner, "_pending_size") and hasattr(inner, "_jsi")
    while True:
        yield await sub.next_msg(timeout=None)
        if not direct or queue.empty():
            continue
        while not queue.empty():
            msg = queue.get_nowait()
            inner._pending_size -= len(msg.data)
            yield msg
            await asyncio.sleep(0)  # as next_msg does, let others run between two messages (a reader's consumers)
        jsi = inner._jsi
        reply = getattr(jsi, "_fcr", None) if jsi is not None else None
        if reply and queue.empty():
            jsi._fcr = None
            await inner._conn.publish(reply)


async def _quiet_unsubscribe(sub: Any) -> None:
    try:
        await sub.unsubscribe()
    except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError, asyncio.CancelledError):
        pass
