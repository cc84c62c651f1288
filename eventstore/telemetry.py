"""Telemetry: fire-and-forget samples into STOKER_TELEMETRY, and reading them back by subject."""

from __future__ import annotations

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


async def sample_keys(nc: Client, topology: Topology, kind: str) -> list[str]:
    """The ids that have samples of one kind kept in telemetry (`host`: every machine a monitor samples)."""
    pattern = topology.telemetry(kind, "*")
    try:
        info = await nc.jetstream().stream_info(topology.telemetry_stream, subjects_filter=pattern)
    except NotFoundError:
        return []
    subjects = info.state.subjects or {}
    return sorted(subject.rsplit(".", 1)[-1] for subject in subjects)
