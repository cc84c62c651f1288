"""Resume: what a reconnecting socket missed, read back from the streams, in order, without duplicates."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping

from eventstore.ports import EventLog, RawMessage
from gateway.hub import Subscriber
from gateway.live import EVENTS, STREAMS, render, topic_subjects


def stream_name(event_log: EventLog, stream: str) -> str:
    """The JetStream stream behind `events` or `telemetry`."""
    topology = event_log.topology
    return topology.events_stream if stream == EVENTS else topology.telemetry_stream


async def merge_by_seq(sources: list[AsyncIterator[RawMessage]]) -> AsyncIterator[RawMessage]:
    """Merge sequence-ordered message sources of one stream into one sequence-ordered source."""
    heads: dict[int, RawMessage] = {}
    try:
        for index, source in enumerate(sources):
            first = await anext(source, None)
            if first is not None:
                heads[index] = first
        while heads:
            index = min(heads, key=lambda i: heads[i].metadata.sequence.stream)
            yield heads[index]
            following = await anext(sources[index], None)
            if following is None:
                del heads[index]
            else:
                heads[index] = following
    finally:
        for source in sources:
            await source.aclose()  # type: ignore[attr-defined]


async def truncated_streams(event_log: EventLog, cursors: Mapping[str, int]) -> list[str]:
    """Streams whose oldest kept message is newer than the cursor: something missed is gone (telemetry ages out)."""
    gone = []
    for stream, cursor in cursors.items():
        state = await event_log.stream_state(stream_name(event_log, stream))
        if 0 < cursor < state.first_seq - 1:
            gone.append(stream)
    return gone


async def replay(event_log: EventLog, subscriber: Subscriber, cursors: Mapping[str, int],
                 targets: Mapping[str, int], believes: Callable[[str], bool] = lambda _subject: True) -> int:
    """Queue every message of the subscriber's topics with cursor < seq <= target, per stream; returns the count.

    `believes` says which telemetry messages may go out (the hub's: a job's samples from its workers only).
    """
    count = 0
    for stream in STREAMS:
        if stream not in cursors:
            continue
        subjects = sorted({s for topic in subscriber.topics
                           for s in topic_subjects(event_log.topology, topic)[stream]})
        sources = [event_log.read_raw(cursors[stream] + 1, until_seq=targets[stream], filter_subject=subject,
                                      stream=stream_name(event_log, stream)) for subject in subjects]
        async for msg in merge_by_seq(sources):
            if stream != EVENTS and not believes(msg.subject):
                continue
            message = render(event_log, stream, msg)
            if message is not None and subscriber.topics.intersection(message.topics):
                before = subscriber.sent[stream]
                await subscriber.push_waiting(message)
                count += subscriber.sent[stream] > before
            if subscriber.closing.is_set():
                return count
    return count
