"""The event log in memory: the `EventLog` contract without a server, for tests of real handlers.

It keeps what JetStream keeps and checks what it checks: one global sequence per stream, the last
sequence of every subject (the aggregate's version, malformed messages included), the expected
version of each aggregate's first message in an append, deduplication by `Nats-Msg-Id` within a
window, all-or-nothing batches. The event, telemetry and dispatch streams exist from the start.
`append_raw` stores bytes as they are, so the malformed-message paths run here too.

What it does not do: limits on a stream's age or size (telemetry never ages out here), and more
than one process. `num_pending` on a delivered message counts every later message of the stream,
whatever the filter (an upper bound; nothing outside the logs reads it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta

from contracts.base import utcnow
from contracts.subjects import MAX_EVENT_BYTES, MAX_TELEMETRY_BYTES, Topology
from eventstore.logcore import LogCore, Message, Metadata, Sequences, StoredMessage, by_aggregate
from eventstore.ports import StreamMissing, StreamState
from eventstore.records import EXPECTED_SUBJECT_SEQ, MSG_ID, AppendError, AppendResult, ConcurrencyError, PendingAppend

DUPLICATE_WINDOW = timedelta(minutes=10)  # as the event stream's (contracts.subjects)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(want) == len(have)


class _Stream:
    def __init__(self, name: str, subjects: str, max_bytes: int) -> None:
        self.name, self.subjects, self.max_bytes = name, subjects, max_bytes
        self.messages: list[StoredMessage] = []
        self.last_by_subject: dict[str, int] = {}
        self.seen_ids: dict[str, tuple[int, datetime]] = {}  # Nats-Msg-Id -> (seq, stored at)


class MemoryLog(LogCore):
    """An `EventLog` kept in this process."""

    def __init__(self, topology: Topology | None = None, *, clock: Callable[[], datetime] = utcnow,
                 duplicate_window: timedelta = DUPLICATE_WINDOW) -> None:
        super().__init__(topology)
        self.clock, self.duplicate_window = clock, duplicate_window
        t = self.topology
        self._streams = {s.name: s for s in (
            _Stream(t.events_stream, t.all_events, MAX_EVENT_BYTES),
            _Stream(t.telemetry_stream, f"{t.prefix}.telemetry.>", MAX_TELEMETRY_BYTES),
            _Stream(t.dispatch_stream, t.dispatch("*"), MAX_EVENT_BYTES))}
        self._moved = asyncio.Condition()

    async def ensure_streams(self, replicas: int = 1) -> None:
        """Nothing to do: the streams exist from the start."""

    # -- writing ----------------------------------------------------------------------------------

    async def _store(self, messages: list[Message], appends: Sequence[PendingAppend]) -> AppendResult:
        result = self._store_events(messages, appends)
        if not result.duplicate:
            await self._notify()
        return result

    def _store_events(self, messages: list[Message], appends: Sequence[PendingAppend]) -> AppendResult:
        # No await in here: the checks and the writes happen as one step, as the server's are.
        stream = self._stream_for(messages[0][0])
        self._expire(stream)
        if len(messages) == 1:
            # A single publish: the version is checked before dedup (a retry that landed is the last message).
            conflict = self._conflict(stream, messages)
            if conflict is not None:
                if self._is_last_on_subject(stream, messages[0]):
                    return self._duplicate_result(stream, messages)
                raise conflict
            if messages[0][2][MSG_ID] in stream.seen_ids:
                return self._duplicate_result(stream, messages)
        else:
            # A batch: a message id seen before refuses the batch, which is how a retried batch shows.
            if any(m[2][MSG_ID] in stream.seen_ids for m in messages):
                return self._duplicate_result(stream, messages)
            conflict = self._conflict(stream, messages)
            if conflict is not None:
                raise conflict
        versions = {subject: self._put(stream, subject, data, headers) for subject, data, headers in messages}
        return AppendResult(len(stream.messages), by_aggregate(versions, self.topology))

    def _conflict(self, stream: _Stream, messages: list[Message]) -> ConcurrencyError | None:
        for subject, _data, headers in messages:
            expected, last = headers.get(EXPECTED_SUBJECT_SEQ), stream.last_by_subject.get(subject, 0)
            if expected is not None and last != int(expected):
                return ConcurrencyError(subject, int(expected), f"wrong last sequence: {last}")
        return None

    def _is_last_on_subject(self, stream: _Stream, message: Message) -> bool:
        last = stream.last_by_subject.get(message[0], 0)
        return last > 0 and (stream.messages[last - 1].headers or {}).get(MSG_ID) == message[2][MSG_ID]

    def _duplicate_result(self, stream: _Stream, messages: list[Message]) -> AppendResult:
        versions = {m[0]: stream.last_by_subject.get(m[0], 0) for m in messages}
        return AppendResult(max(versions.values()), by_aggregate(versions, self.topology), duplicate=True)

    async def append_raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                         stream: str | None = None) -> int:
        """Store bytes as they are (an import, a test's malformed message); deduplicated by Nats-Msg-Id."""
        target = self._stream_for(subject)
        if stream is not None and stream != target.name:
            raise AppendError(f"{subject} is not a subject of stream {stream}")
        if len(data) > target.max_bytes:
            raise AppendError(f"JetStream refused the append: message size exceeds maximum allowed "
                              f"({len(data)} > {target.max_bytes})")
        self._expire(target)
        msg_id = (headers or {}).get(MSG_ID)
        if msg_id is not None and msg_id in target.seen_ids:
            return target.seen_ids[msg_id][0]
        conflict = self._conflict(target, [(subject, data, headers or {})])
        if conflict is not None:
            raise conflict
        seq = self._put(target, subject, data, dict(headers) if headers is not None else None)
        await self._notify()
        return seq

    def _put(self, stream: _Stream, subject: str, data: bytes, headers: dict[str, str] | None) -> int:
        seq = len(stream.messages) + 1
        now = self.clock()
        stream.messages.append(StoredMessage(subject=subject, data=data, headers=headers,
                                             metadata=Metadata(sequence=Sequences(seq), timestamp=now)))
        stream.last_by_subject[subject] = seq
        msg_id = (headers or {}).get(MSG_ID)
        if msg_id is not None:
            stream.seen_ids[msg_id] = (seq, now)
        return seq

    def _expire(self, stream: _Stream) -> None:
        horizon = self.clock() - self.duplicate_window
        for msg_id in [i for i, (_seq, at) in stream.seen_ids.items() if at < horizon]:
            del stream.seen_ids[msg_id]

    def _stream_for(self, subject: str) -> _Stream:
        for stream in self._streams.values():
            if subject_matches(stream.subjects, subject):
                return stream
        raise AppendError(f"no stream listens on {subject}: create it with ensure_streams (stoker up does)")

    def _named(self, stream: str | None) -> _Stream:
        name = stream or self.topology.events_stream
        if name not in self._streams:
            raise StreamMissing(f"no stream {name}")
        return self._streams[name]

    async def _notify(self) -> None:
        async with self._moved:
            self._moved.notify_all()

    # -- looking ----------------------------------------------------------------------------------

    async def subject_version(self, subject: str) -> int:
        """The sequence of the last message on `subject` (0 when there is none)."""
        return self._named(None).last_by_subject.get(subject, 0)

    async def last_seq(self, stream: str | None = None) -> int:
        """The last sequence of the event stream (or of `stream`); 0 when empty."""
        return len(self._named(stream).messages)

    async def stream_state(self, stream: str | None = None) -> StreamState:
        """Message count and sequence range of the event stream (or `stream`)."""
        count = len(self._named(stream).messages)
        return StreamState(count, 1 if count else 0, count)

    async def has_events(self, filter_subject: str) -> bool:
        """Whether any message of the event stream is on `filter_subject`."""
        return any(subject_matches(filter_subject, s) for s in self._named(None).last_by_subject)

    async def appended_at(self, seq: int, stream: str | None = None) -> datetime | None:
        """When the message at sequence `seq` was stored (None when there is none)."""
        msg = await self.raw_at(max(1, seq), stream)
        return msg.metadata.timestamp if msg is not None else None

    async def first_match(self, subject: str, start: int, stream: str | None = None) -> int | None:
        """The sequence of the first message on `subject` (wildcards allowed) at or after `start`."""
        messages = self._named(stream).messages
        for msg in messages[max(1, start) - 1:]:
            if subject_matches(subject, msg.subject):
                return msg.metadata.sequence.stream
        return None

    async def raw_at(self, seq: int, stream: str | None = None) -> StoredMessage | None:
        """The message at sequence `seq`, as stored (None when there is none)."""
        messages = self._named(stream).messages
        return messages[seq - 1] if 1 <= seq <= len(messages) else None

    # -- reading ----------------------------------------------------------------------------------

    async def read_raw(self, from_seq: int = 1, *, until_seq: int | None = None, filter_subject: str | None = None,
                       stream: str | None = None) -> AsyncIterator[StoredMessage]:
        """Raw messages from `from_seq` to the end as of now, or `until_seq` (malformed ones included)."""
        messages = self._named(stream).messages
        end = min(until_seq, len(messages)) if until_seq is not None else len(messages)
        for index in range(max(1, from_seq) - 1, end):
            msg = messages[index]
            if filter_subject is None or subject_matches(filter_subject, msg.subject):
                yield self._delivered(msg, len(messages))

    async def follow_raw(self, from_seq: int = 1, *, filter_subject: str | None = None,
                         stream: str | None = None) -> AsyncIterator[StoredMessage]:
        """Raw messages from `from_seq` on, following live, forever."""
        messages = self._named(stream).messages
        index = max(1, from_seq) - 1
        while True:
            while index < len(messages):
                msg = messages[index]
                index += 1
                if filter_subject is None or subject_matches(filter_subject, msg.subject):
                    yield self._delivered(msg, len(messages))
            await self._wait_beyond(messages, index)

    async def _wait_beyond(self, messages: list[StoredMessage], count: int) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: len(messages) > count)

    @staticmethod
    def _delivered(msg: StoredMessage, count: int) -> StoredMessage:
        seq = msg.metadata.sequence.stream
        return StoredMessage(subject=msg.subject, data=msg.data, headers=dict(msg.headers or {}) or None,
                             metadata=Metadata(sequence=Sequences(seq), timestamp=msg.metadata.timestamp,
                                               num_pending=count - seq))
