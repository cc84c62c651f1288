"""The EventLog contract, run against JetStreamLog on a real nats-server and against MemoryLog.

Whatever a handler may rely on is here: versions and conflicts, dedup of a retried append, atomic
batches, global and per-subject sequences, malformed messages that are skipped yet move versions,
bounded reads, filters, and a subscription that replays and then follows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from contracts import events as ev
from contracts.base import new_id, utcnow, uuid7
from contracts.codec import MalformedEvent
from eventstore.connect import connect
from eventstore.log import JetStreamLog
from eventstore.memory import MemoryLog, subject_matches
from eventstore.ports import EventLog, StreamMissing
from eventstore.records import EXPECTED_SUBJECT_SEQ, MSG_ID, ConcurrencyError, EventTooLarge, PendingAppend


def submitted(job_id: str, **extra) -> ev.JobSubmitted:
    return ev.JobSubmitted(job_id=job_id, kind="train", workload="noop", submitted_at=utcnow(), **extra)


def assigned(job_id: str, attempt: int = 1) -> ev.JobAssigned:
    return ev.JobAssigned(job_id=job_id, attempt=attempt, worker_id="w1", assigned_at=utcnow())


@pytest_asyncio.fixture(params=["jetstream", "memory"])
async def log(request: pytest.FixtureRequest, nats_server, topology) -> AsyncIterator[EventLog]:
    """Each kind of event log, empty, streams created."""
    if request.param == "memory":
        yield MemoryLog(topology)
        return
    nc = await connect(nats_server.url, "stoker-tests")
    jetstream = JetStreamLog(nc, topology)
    await jetstream.ensure_streams()
    yield jetstream
    await nc.close()


async def test_versions_and_optimistic_concurrency(log: EventLog) -> None:
    job = new_id()
    first = await log.append("job", job, [submitted(job), assigned(job)], expected_version=0)
    version = first.versions[f"job.{job}"]
    assert version == first.last_seq
    with pytest.raises(ConcurrencyError):
        await log.append("job", job, [assigned(job, 2)], expected_version=0)
    with pytest.raises(ConcurrencyError):
        await log.append("job", job, [assigned(job, 2), assigned(job, 3)], expected_version=version - 1)
    events, loaded = await log.load("job", job)
    assert loaded == version and [e.type for e in events] == ["JobSubmitted", "JobAssigned"]
    assert events[1].correlation_id == events[0].event_id  # one decision shares a correlation id
    assert await log.load("job", new_id()) == ([], 0)
    assert await log.version("job", job) == version


@pytest.mark.parametrize("count", [1, 3])
async def test_retried_append_is_deduplicated(log: EventLog, count: int) -> None:
    job = new_id()
    await log.append("job", job, [submitted(job)], expected_version=0)
    batch = [assigned(job, n) for n in range(1, count + 1)]
    ids = [uuid7() for _ in batch]
    first = await log.append("job", job, batch, expected_version=await log.version("job", job), event_ids=ids)
    # The acknowledgement was "lost": the caller sends the very same append again.
    again = await log.append("job", job, batch, expected_version=first.last_seq - count, event_ids=ids)
    assert again.duplicate and again.last_seq == first.last_seq
    assert again.versions == first.versions
    events, _ = await log.load("job", job)
    assert len(events) == 1 + count


async def test_a_retry_after_another_writer_moved_on_is_a_conflict(log: EventLog) -> None:
    job = new_id()
    ids = [uuid7()]
    await log.append("job", job, [submitted(job)], expected_version=0, event_ids=ids)
    await log.append("job", job, [assigned(job)], expected_version=await log.version("job", job))
    with pytest.raises(ConcurrencyError):
        await log.append("job", job, [submitted(job)], expected_version=0, event_ids=ids)


async def test_append_spanning_aggregates_is_atomic(log: EventLog) -> None:
    a, b = new_id(), new_id()
    await log.append("job", a, [submitted(a)], expected_version=0)
    before = await log.last_seq()
    with pytest.raises(ConcurrencyError):
        await log.append_batch([PendingAppend("job", b, [submitted(b)], 0),
                                PendingAppend("job", a, [assigned(a)], 0)])  # a is at version 1, not 0
    assert await log.last_seq() == before
    assert await log.load("job", b) == ([], 0)
    result = await log.append_batch([PendingAppend("job", b, [submitted(b)], 0),
                                     PendingAppend("job", a, [assigned(a)], before)])
    assert result.versions == {f"job.{b}": before + 1, f"job.{a}": before + 2}
    assert result.last_seq == before + 2


async def test_bad_appends_are_refused_and_change_nothing(log: EventLog) -> None:
    job = new_id()
    before = await log.last_seq()
    with pytest.raises(EventTooLarge, match="bytes"):
        await log.append("job", job, [submitted(job, params={"blob": "x" * 2_000_000})])
    with pytest.raises(ValueError, match="does not belong"):
        await log.append("job", job, [submitted(new_id())])
    with pytest.raises(ValueError, match="at least one event"):
        await log.append("job", job, [])
    assert await log.last_seq() == before


async def test_sequences_are_global_and_versions_per_subject(log: EventLog) -> None:
    a, b = new_id(), new_id()
    first = await log.append("job", a, [submitted(a)], 0)
    second = await log.append("job", b, [submitted(b)], 0)
    third = await log.append("job", a, [assigned(a)], first.last_seq)
    assert (first.last_seq, second.last_seq, third.last_seq) == (1, 2, 3)
    assert await log.version("job", a) == 3 and await log.version("job", b) == 2
    state = await log.stream_state()
    assert (state.messages, state.first_seq, state.last_seq) == (3, 1, 3)
    assert await log.last_seq() == 3
    assert [e.seq for e in [s async for s in log.read(2)]] == [2, 3]
    assert [e.seq for e in [s async for s in log.read(1, until_seq=2)]] == [1, 2]
    only_a = log.topology.events("job", a)
    assert [e.seq async for e in log.read(1, filter_subject=only_a)] == [1, 3]
    assert [m.metadata.sequence.stream async for m in log.read_raw(2, filter_subject=only_a)] == [3]
    assert await log.first_match(only_a, 2) == 3 and await log.first_match(only_a, 4) is None
    assert await log.has_events(log.topology.events("job", "*"))
    assert not await log.has_events(log.topology.events("worker", "*"))
    raw = await log.raw_at(2)
    assert raw is not None and raw.subject == log.topology.events("job", b)
    assert await log.raw_at(99) is None
    assert await log.appended_at(1) is not None and await log.appended_at(99) is None
    with pytest.raises(StreamMissing):
        await log.stream_state("NO_SUCH_STREAM")


async def test_malformed_messages_are_skipped_but_move_the_version(log: EventLog) -> None:
    job = new_id()
    await log.append("job", job, [submitted(job)], 0)
    subject = log.topology.events("job", job)
    garbage = await log.append_raw(subject, b"{not json")
    assert garbage == 2
    events, version = await log.load("job", job)
    assert [e.type for e in events] == ["JobSubmitted"] and version == 2
    with pytest.raises(ConcurrencyError):
        await log.append("job", job, [assigned(job)], 1)  # the skipped message counts
    await log.append("job", job, [assigned(job)], version)
    raw = [m async for m in log.read_raw(1)]
    assert len(raw) == 3 and raw[1].data == b"{not json"
    assert isinstance(log.decode_or_reason(raw[1]), MalformedEvent)
    assert log.decode(raw[1]) is None and log.malformed_seen == 1
    with pytest.raises(MalformedEvent):
        log.decode_strict(raw[1])
    assert [e.seq async for e in log.read()] == [1, 3]


async def test_raw_appends_are_deduplicated_by_message_id(log: EventLog) -> None:
    subject = log.topology.events("job", new_id())
    first = await log.append_raw(subject, b"x", {MSG_ID: "same"})
    again = await log.append_raw(subject, b"x", {MSG_ID: "same"})
    assert first == again and await log.last_seq() == first
    with pytest.raises(ConcurrencyError):
        await log.append_raw(subject, b"y", {MSG_ID: "other", EXPECTED_SUBJECT_SEQ: "0"})
    sample = await log.append_raw(log.topology.telemetry("progress", "j"), b"{}")
    assert sample == 1 and await log.last_seq(log.topology.telemetry_stream) == 1


async def test_subscribe_replays_then_follows(log: EventLog) -> None:
    job, other = new_id(), new_id()
    await log.append("job", job, [submitted(job)], expected_version=0)
    seen: list[str] = []

    async def follow() -> None:
        async for stored in log.subscribe(1, filter_subject=log.topology.events("job", job)):
            seen.append(stored.type)
            if len(seen) == 3:
                return

    task = asyncio.create_task(follow())
    await log.append("job", other, [submitted(other)])
    await log.append("job", job, [assigned(job)])
    await log.append_raw(log.topology.events("job", job), b"garbage")  # skipped by readers of events
    await log.append("job", job, [assigned(job, 2)])
    await asyncio.wait_for(task, 10)
    assert seen == ["JobSubmitted", "JobAssigned", "JobAssigned"]


async def test_follow_raw_starts_where_asked(log: EventLog) -> None:
    for _ in range(3):
        job = new_id()
        await log.append("job", job, [submitted(job)], 0)
    stream = log.follow_raw(2)
    got = [(await asyncio.wait_for(anext(stream), 10)).metadata.sequence.stream for _ in range(2)]
    await stream.aclose()
    assert got == [2, 3]


def test_subject_matching() -> None:
    assert subject_matches("a.*.c", "a.b.c") and not subject_matches("a.*.c", "a.b.d")
    assert subject_matches("a.>", "a.b.c") and not subject_matches("a.>", "a")
    assert not subject_matches("a.*", "a.b.c") and subject_matches("a.b", "a.b")
