"""Telemetry: fire-and-forget samples into STOKER_TELEMETRY, and reading them back by subject."""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

import msgspec
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from contracts.codec import decode_message, encode
from contracts.subjects import Topology
from eventstore.observability import get_logger

log = get_logger(component="telemetry")
T = TypeVar("T")


async def publish_sample(nc: Client, topology: Topology, kind: str, key: str, sample: msgspec.Struct) -> None:
    """Publish one sample without waiting for an acknowledgement (telemetry is disposable)."""
    await nc.publish(topology.telemetry(kind, key), encode(sample))


async def last_sample(nc: Client, topology: Topology, kind: str, key: str, cls: type[T]) -> T | None:
    """The newest sample on one subject, or None."""
    js = nc.jetstream()
    try:
        msg = await js.get_last_msg(topology.telemetry_stream, topology.telemetry(kind, key), direct=True)
    except NotFoundError:
        return None
    try:
        return decode_message(cls, msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("skipping malformed sample", subject=msg.subject, reason=str(exc))
        return None


async def sample_history(nc: Client, topology: Topology, kind: str, key: str, cls: type[T], *,
                         from_seq: int = 1, limit: int = 100_000) -> list[tuple[int, T]]:
    """Samples on one subject, oldest first, as (stream sequence, sample); malformed ones are skipped."""
    from eventstore.log import JetStreamLog

    subject = topology.telemetry(kind, key)
    out: list[tuple[int, T]] = []
    reader = JetStreamLog(nc, topology).read_raw(from_seq, filter_subject=subject, stream=topology.telemetry_stream)
    async for msg in reader:
        seq = msg.metadata.sequence.stream
        try:
            out.append((seq, decode_message(cls, msg.data)))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.warning("skipping malformed sample", subject=subject, seq=seq, reason=str(exc))
        if len(out) >= limit:
            await reader.aclose()
            break
    return out


async def first_seq_since(nc: Client, topology: Topology, kind: str, key: str, since: datetime) -> int | None:
    """The stream sequence of the first sample on one subject stored at or after `since` (None: there is none).

    A binary search of direct gets (about log2 of the stream's length), so a window of recent history is
    read without reading the days of samples before it.
    """
    js, stream, subject = nc.jetstream(), topology.telemetry_stream, topology.telemetry(kind, key)

    async def at_or_after(seq: int):
        try:
            return await js.get_msg(stream, seq=max(1, seq), subject=subject, next=True, direct=True)
        except NotFoundError:
            return None

    first = await at_or_after(1)
    if first is None:
        return None
    lo, hi, found = int(first.seq), None, None
    last = await js.get_last_msg(stream, subject, direct=True)
    if last.time is not None and last.time < since:
        return None
    hi = int(last.seq)
    while lo <= hi:
        mid = (lo + hi) // 2
        msg = await at_or_after(mid)
        if msg is None or int(msg.seq) > hi:
            hi = mid - 1
        elif msg.time is not None and msg.time < since:
            lo = int(msg.seq) + 1
        else:
            found, hi = int(msg.seq), mid - 1
    return found


async def sample_keys(nc: Client, topology: Topology, kind: str) -> list[str]:
    """The ids that have samples of one kind kept in telemetry (`host`: every machine a monitor samples)."""
    pattern = topology.telemetry(kind, "*")
    try:
        info = await nc.jetstream().stream_info(topology.telemetry_stream, subjects_filter=pattern)
    except NotFoundError:
        return []
    subjects = info.state.subjects or {}
    return sorted(subject.rsplit(".", 1)[-1] for subject in subjects)
