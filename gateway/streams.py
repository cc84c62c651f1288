"""Bounded reads of a stream by subject: a range of sequences, never waiting for messages to come."""

from __future__ import annotations

from collections.abc import AsyncIterator

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from eventstore.log import JetStreamLog


async def first_match(event_log: JetStreamLog, stream: str, subject: str, start: int) -> int | None:
    """The sequence of the first message on `subject` (wildcards allowed) at or after `start`."""
    try:
        msg = await event_log.js.get_msg(stream, seq=max(1, start), subject=subject, next=True, direct=True)
    except NotFoundError:
        return None
    return int(msg.seq) if msg.seq else None


async def read_range(event_log: JetStreamLog, stream: str, subject: str, start: int,
                     end: int) -> AsyncIterator[Msg]:
    """Raw messages on `subject` with `start <= seq <= end`, oldest first."""
    if end < start:
        return
    # An ordered consumer waits forever when nothing matches; look before subscribing.
    first = await first_match(event_log, stream, subject, start)
    if first is None or first > end:
        return
    async for msg in event_log.follow_raw(first, filter_subject=subject, stream=stream):
        seq = msg.metadata.sequence.stream
        if seq > end:
            return
        yield msg
        if seq >= end or msg.metadata.num_pending == 0:
            return


async def stream_last_seq(event_log: JetStreamLog, stream: str) -> int:
    """The last sequence a stream holds (0 when empty)."""
    info = await event_log.js.stream_info(stream)
    return int(info.state.last_seq)
