"""The event log as the rest of stoker sees it: a port, two adapters (JetStreamLog, MemoryLog).

Code outside `eventstore/` takes an `EventLog`, never a JetStream context: what it needs of the
stream (is it there, how many messages, the message at a sequence) is asked through this port.
Raw messages have the shape of a nats `Msg` (`subject`, `data`, `headers`, `metadata.sequence.stream`,
`metadata.timestamp`, `metadata.num_pending`), so readers of malformed messages work on both logs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from contracts.base import Event
from contracts.codec import MalformedEvent
from contracts.subjects import Topology
from eventstore.records import AppendResult, PendingAppend, StoredEvent


class StreamMissing(LookupError):
    """The stream does not exist (stoker up, or ensure_streams, creates it)."""


class StreamState(NamedTuple):
    """What a stream holds now."""

    messages: int
    first_seq: int
    last_seq: int


class SequencePair(Protocol):
    """Where a message sits: its stream sequence."""

    @property
    def stream(self) -> int: ...


class RawMetadata(Protocol):
    """A raw message's place in its stream."""

    @property
    def sequence(self) -> SequencePair: ...

    @property
    def timestamp(self) -> datetime | None: ...

    @property
    def num_pending(self) -> int: ...


class RawMessage(Protocol):
    """A stored message as it is, malformed or not (a nats `Msg` is one)."""

    @property
    def subject(self) -> str: ...

    @property
    def data(self) -> bytes: ...

    @property
    def headers(self) -> dict[str, str] | None: ...

    @property
    def metadata(self) -> Any: ...


class EventLog(Protocol):
    """stoker's event log: one subject per aggregate, a global sequence, the sequence is the version.

    Appends are atomic per call, checked against an expected version (ConcurrencyError when the
    aggregate moved on) and deduplicated by event id within the stream's window. Malformed
    messages are skipped by every reader of events but still move their subject's version.
    """

    topology: Topology
    malformed_seen: int

    async def ensure_streams(self, replicas: int = 1) -> None:
        """Create (or update) the streams the log lives in."""

    async def append(self, aggregate: str, aggregate_id: str, events: Sequence[Event],
                     expected_version: int | None = None, *, correlation_id: str | None = None,
                     causation_id: str | None = None, event_ids: Sequence[str] | None = None) -> AppendResult:
        """Append one decision's events to one aggregate, if it is still at `expected_version`."""

    async def append_batch(self, appends: Sequence[PendingAppend], *, correlation_id: str | None = None,
                           causation_id: str | None = None,
                           event_ids: Sequence[str] | None = None) -> AppendResult:
        """Append events of several aggregates as one atomic batch."""

    async def append_raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None,
                         stream: str | None = None) -> int:
        """Store bytes as they are (an import, a test's malformed message); deduplicated by Nats-Msg-Id."""

    async def load(self, aggregate: str, aggregate_id: str) -> tuple[list[StoredEvent], int]:
        """Every event of one aggregate and its version."""

    async def version(self, aggregate: str, aggregate_id: str) -> int:
        """The current version of one aggregate (0 when it has no events)."""

    async def subject_version(self, subject: str) -> int:
        """The sequence of the last message on `subject` (0 when there is none)."""

    async def last_seq(self, stream: str | None = None) -> int:
        """The last sequence of the event stream (or of `stream`)."""

    async def stream_state(self, stream: str | None = None) -> StreamState:
        """Message count and sequence range of the event stream (or `stream`); StreamMissing if absent."""

    async def has_events(self, filter_subject: str) -> bool:
        """Whether any message of the event stream is on `filter_subject` (False when there is no stream)."""

    async def appended_at(self, seq: int, stream: str | None = None) -> datetime | None:
        """When the message at `seq` was stored."""

    async def first_match(self, subject: str, start: int, stream: str | None = None) -> int | None:
        """The sequence of the first message on `subject` at or after `start`."""

    async def raw_at(self, seq: int, stream: str | None = None) -> RawMessage | None:
        """The message at sequence `seq`, as stored (None when there is none)."""

    def read(self, from_seq: int = 1, *, until_seq: int | None = None,
             filter_subject: str | None = None) -> AsyncIterator[StoredEvent]:
        """Events from `from_seq` to the end as of now (or `until_seq`), then stop."""

    def subscribe(self, from_seq: int = 1, *, filter_subject: str | None = None) -> AsyncIterator[StoredEvent]:
        """Events from `from_seq`, then new ones as they are appended, forever."""

    def read_raw(self, from_seq: int = 1, *, until_seq: int | None = None, filter_subject: str | None = None,
                 stream: str | None = None) -> AsyncIterator[RawMessage]:
        """Raw messages (malformed ones included) from `from_seq` to the end as of now, or `until_seq`."""

    def follow_raw(self, from_seq: int = 1, *, filter_subject: str | None = None,
                   stream: str | None = None) -> AsyncIterator[RawMessage]:
        """Raw messages from `from_seq` on, following live."""

    def decode(self, msg: RawMessage) -> StoredEvent | None:
        """A raw message as a StoredEvent; None (logged once) when it is malformed."""

    def decode_or_reason(self, msg: RawMessage) -> StoredEvent | MalformedEvent:
        """Like `decode`, with the reason a malformed message is skipped."""

    def decode_strict(self, msg: RawMessage) -> StoredEvent:
        """A raw message as a StoredEvent, or MalformedEvent raised."""
