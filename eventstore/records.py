"""What the event log speaks in: header names, append requests and results, stored events, errors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import msgspec

from contracts.base import Event
from eventstore.observability import inject_trace

MSG_ID = "Nats-Msg-Id"
EXPECTED_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
TYPE = "Stoker-Type"
SCHEMA = "Stoker-Schema"
CORRELATION = "Stoker-Correlation-Id"
CAUSATION = "Stoker-Causation-Id"


class ConcurrencyError(Exception):
    """The aggregate moved on since it was loaded; reload, decide again."""

    def __init__(self, subject: str, expected: int | None, detail: str) -> None:
        super().__init__(f"{subject}: expected version {expected}, {detail}")
        self.subject, self.expected = subject, expected


class EventTooLarge(ValueError):
    """An event's payload is over the stream's maximum message size."""


class AppendError(RuntimeError):
    """The server refused or never acknowledged an append; nothing is half-written."""


class PendingAppend(NamedTuple):
    """Events of one aggregate to append, with the version they were decided on (None: no check).

    `trace` is the OpenTelemetry context the events were decided in, when that is not the current one
    (a group commit appends decisions of many commands at once): their `traceparent` comes from it.
    """

    aggregate: str
    aggregate_id: str
    events: Sequence[Event]
    expected_version: int | None = None
    trace: Any = None


class AppendResult(NamedTuple):
    """Where appended events landed: the last stream sequence, and each aggregate's new version."""

    last_seq: int
    versions: dict[str, int]
    duplicate: bool = False


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as read back: its stream sequence (= its aggregate's version after it) and metadata."""

    seq: int
    subject: str
    aggregate: str
    aggregate_id: str
    event: Event
    event_id: str
    schema: int
    time: datetime | None
    headers: dict[str, str]

    @property
    def type(self) -> str:
        """The event type name."""
        return type(self.event).__name__

    @property
    def correlation_id(self) -> str | None:
        """The id tying this event to the request that began the chain."""
        return self.headers.get(CORRELATION)

    @property
    def causation_id(self) -> str | None:
        """The id of the message that caused this event."""
        return self.headers.get(CAUSATION)


def event_record(stored: StoredEvent) -> dict[str, Any]:
    """An event as data, the record the API and the CLI both show: sequence, time, ids and the payload."""
    return {"seq": stored.seq, "time": stored.time, "subject": stored.subject, "type": stored.type,
            "schema": stored.schema, "aggregate": stored.aggregate, "aggregate_id": stored.aggregate_id,
            "event_id": stored.event_id, "correlation_id": stored.correlation_id,
            "causation_id": stored.causation_id, "event": msgspec.to_builtins(stored.event)}


def event_headers(event: Event, event_id: str, correlation_id: str | None,
                  causation_id: str | None, trace: Any = None) -> dict[str, str]:
    """The headers of one event: its id, type, schema, correlation and causation, and the W3C
    `traceparent` of the current span (or of `trace`, an OpenTelemetry context)."""
    headers = {MSG_ID: event_id, TYPE: type(event).__name__, SCHEMA: str(event.schema)}
    headers[CORRELATION] = correlation_id or event_id
    if causation_id:
        headers[CAUSATION] = causation_id
    return inject_trace(headers, trace)
