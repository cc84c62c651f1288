"""Base types shared by every message: ids, clocks and the Struct flavours."""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from typing import Annotated, ClassVar

import msgspec

# Ids travel as NATS subject tokens, so they may not hold dots, spaces or wildcards.
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Id = Annotated[str, msgspec.Meta(pattern=ID_PATTERN, max_length=64)]
_ID_RE = re.compile(ID_PATTERN)

# Every integer on the wire is bounded where it is decoded, so no message can carry a number that a
# read model cannot store. 2^53-1 is the largest integer a JSON number keeps exactly in a browser, and
# it fits SQLite INTEGER and PostgreSQL BIGINT; fields stored in 32-bit INTEGER columns stay below 2^31.
MAX_SAFE_INT = 2**53 - 1
MAX_INT32 = 2**31 - 1
NonNegative = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAFE_INT)]  # iterations, sizes, sequences, memory
Positive = Annotated[int, msgspec.Meta(ge=1, le=MAX_SAFE_INT)]
SmallInt = Annotated[int, msgspec.Meta(ge=-MAX_INT32, le=MAX_INT32)]
SmallNonNegative = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT32)]  # slots, GPU indices, attempt 0 (none ran)
SmallPositive = Annotated[int, msgspec.Meta(ge=1, le=MAX_INT32)]  # attempts, CPU cores, slots
Priority = Annotated[int, msgspec.Meta(ge=-1_000_000, le=1_000_000)]
GpuCount = Annotated[int, msgspec.Meta(ge=0, le=64)]
Retries = Annotated[int, msgspec.Meta(ge=0, le=100)]
StatusCode = Annotated[int, msgspec.Meta(ge=100, le=599)]
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def uuid7() -> str:
    """A time-ordered UUIDv7 (RFC 9562) as a string: event ids and message ids."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | rand
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    digits = f"{value:032x}"  # as str(uuid.UUID(int=value)), without building the UUID (every event has one)
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def new_id() -> str:
    """A 26-character, time-ordered, URL- and subject-safe id (ULID layout) for jobs and tokens."""
    ms = time.time_ns() // 1_000_000
    value = (ms & 0xFFFF_FFFF_FFFF) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_valid_id(value: str) -> bool:
    """Whether a string can be used as an aggregate id (a single NATS subject token)."""
    return bool(_ID_RE.match(value))


class Message(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """Base of every wire message: immutable, keyword-only, JSON on the wire."""


class Event(Message, tag_field="type", tag=True):
    """A fact that happened. The class name is its type; `schema` its version (header `Stoker-Schema`)."""

    aggregate: ClassVar[str] = ""
    schema: ClassVar[int] = 1

    @property
    def aggregate_id(self) -> str:
        """The id of the aggregate this event belongs to."""
        raise NotImplementedError


class Command(Message, tag_field="type", tag=True):
    """An imperative request to one service, sent as a NATS request to its micro endpoint."""

    service: ClassVar[str] = ""
    verb: ClassVar[str] = ""
    # A worker's own command: sent on `<subject>.<worker_id>` (Topology.command), which only that worker's
    # NATS user may publish to, and refused by the service when the subject and `worker_id` differ.
    from_worker: ClassVar[bool] = False
    # A command sent by a credential for one thing it holds: the field whose value ends the subject, as
    # `worker_id` does for a worker's own (`speaker_field`). A join token's claim ends in its `token_id`.
    speaker: ClassVar[str] = ""

    @classmethod
    def speaker_field(cls) -> str:
        """The field whose value ends this command's subject ('' when the subject has no such end)."""
        return cls.speaker or ("worker_id" if cls.from_worker else "")
