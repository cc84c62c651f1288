"""Encoding and decoding of events on the wire, with schema versions and upcasting."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

from contracts.base import Event
from contracts.events import EVENT_TYPES
from contracts.upcasters import upcast

T = TypeVar("T")
_encoder = msgspec.json.Encoder()
_decoders: dict[type, msgspec.json.Decoder] = {}


class MalformedEvent(ValueError):
    """A message on the event stream that cannot be read as a stoker event; the reason says why."""


def encode(message: msgspec.Struct) -> bytes:
    """JSON bytes of any message."""
    return _encoder.encode(message)


def _decoder(cls: type) -> msgspec.json.Decoder:
    decoder = _decoders.get(cls)
    if decoder is None:
        decoder = _decoders[cls] = msgspec.json.Decoder(cls)
    return decoder


def decode_event(event_type: str | None, schema: str | int | None, data: bytes) -> Event:
    """Decode one event payload of a given type and schema version, upcasting old versions."""
    cls = EVENT_TYPES.get(event_type or "")
    if cls is None:
        raise MalformedEvent(f"unknown event type {event_type!r}")
    try:
        version = int(schema) if schema is not None else 1
    except ValueError:
        raise MalformedEvent(f"{event_type}: schema version {schema!r} is not a number") from None
    if version > cls.schema:
        raise MalformedEvent(f"{event_type}: schema {version} is newer than this stoker knows ({cls.schema})")
    if version < 1:
        raise MalformedEvent(f"{event_type}: schema version {version} is invalid")
    try:
        if version == cls.schema:
            return _decoder(cls).decode(data)
        payload: Any = msgspec.json.decode(data)
        if not isinstance(payload, dict):
            raise MalformedEvent(f"{event_type}: payload is not a JSON object")
        payload = upcast(event_type, version, cls.schema, payload)
        payload["type"] = event_type
        return msgspec.convert(payload, cls)
    except (msgspec.DecodeError, msgspec.ValidationError, KeyError) as exc:
        raise MalformedEvent(f"{event_type} schema {version}: {exc}") from None


def decode_message(cls: type[T], data: bytes) -> T:
    """Decode a command, reply or telemetry message; msgspec errors name the bad field."""
    return _decoder(cls).decode(data)
