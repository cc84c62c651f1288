"""Properties of the event log on a real nats-server: replay equals what was appended; one writer wins."""

from __future__ import annotations

import asyncio
import secrets

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import events as ev
from contracts.base import utcnow
from contracts.subjects import Topology
from eventstore.connect import connect
from eventstore.log import ConcurrencyError, JetStreamLog

JOB_IDS = ["a", "b", "c"]


def fold(state: dict[str, tuple[str, int, int]], event: ev.Event) -> dict[str, tuple[str, int, int]]:
    """A small job fold: (status, attempt, checkpoints) per job."""
    status, attempt, checkpoints = state.get(event.aggregate_id, ("none", 0, 0))
    match event:
        case ev.JobSubmitted():
            status = "queued"
        case ev.JobAssigned(attempt=n):
            status, attempt = "assigned", n
        case ev.JobCheckpointed():
            checkpoints += 1
        case ev.JobRequeued(attempt=n):
            status, attempt = "queued", n
        case ev.JobCompleted():
            status = "completed"
    return {**state, event.aggregate_id: (status, attempt, checkpoints)}


@st.composite
def job_event(draw: st.DrawFn) -> ev.Event:
    job = draw(st.sampled_from(JOB_IDS))
    now = utcnow()
    kind = draw(st.sampled_from(["submit", "assign", "checkpoint", "requeue", "complete"]))
    attempt = draw(st.integers(1, 5))
    return {
        "submit": lambda: ev.JobSubmitted(job_id=job, kind="train", workload="w", params={"x": attempt},
                                          submitted_at=now),
        "assign": lambda: ev.JobAssigned(job_id=job, attempt=attempt, worker_id="w1", assigned_at=now),
        "checkpoint": lambda: ev.JobCheckpointed(job_id=job, attempt=attempt, iteration=attempt * 10,
                                                 name=f"{job}/{attempt}", sha256="0" * 64, size=1,
                                                 checkpointed_at=now),
        "requeue": lambda: ev.JobRequeued(job_id=job, attempt=attempt, reason="retry", requeued_at=now),
        "complete": lambda: ev.JobCompleted(job_id=job, attempt=attempt, completed_at=now),
    }[kind]()


def run(coro):
    return asyncio.run(coro)


async def fresh_log(url: str) -> tuple:
    nc = await connect(url, "property")
    log = JetStreamLog(nc, Topology(prefix=f"p{secrets.token_hex(4)}"))
    await log.ensure_streams()
    return nc, log


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(job_event(), min_size=1, max_size=25), groups=st.lists(st.integers(1, 3), min_size=25))
def test_replay_folds_to_the_state_that_was_appended(nats_server, events, groups) -> None:
    async def scenario() -> None:
        nc, log = await fresh_log(nats_server.url)
        try:
            versions: dict[str, int] = {}
            live: dict = {}
            index, sizes = 0, iter(groups)
            while index < len(events):
                job = events[index].aggregate_id
                size = next(sizes)
                chunk = [events[index]]
                for event in events[index + 1:index + size]:  # a contiguous run of one job's events
                    if event.aggregate_id != job:
                        break
                    chunk.append(event)
                result = await log.append("job", job, chunk, expected_version=versions.get(job, 0))
                versions[job] = result.versions[f"job.{job}"]
                for event in chunk:
                    live = fold(live, event)
                index += len(chunk)
            replayed: dict = {}
            stored = [s async for s in log.read()]
            for item in stored:
                replayed = fold(replayed, item.event)
            assert replayed == live
            assert [s.event for s in stored] == events
            for job, version in versions.items():
                assert await log.version("job", job) == version
        finally:
            await nc.close()

    run(scenario())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writers=st.integers(2, 8), events_each=st.integers(1, 3), existing=st.booleans())
def test_concurrent_appends_with_one_expected_version_one_wins(nats_server, writers, events_each, existing) -> None:
    async def scenario() -> None:
        nc, log = await fresh_log(nats_server.url)
        try:
            expected = 0
            if existing:
                expected = (await log.append("job", "a", [ev.JobSubmitted(
                    job_id="a", kind="train", workload="w", submitted_at=utcnow())], 0)).last_seq

            async def writer(n: int):
                batch = [ev.JobAssigned(job_id="a", attempt=n + 1, worker_id=f"w{n}", assigned_at=utcnow())
                         for _ in range(events_each)]
                return await log.append("job", "a", batch, expected_version=expected)

            results = await asyncio.gather(*(writer(n) for n in range(writers)), return_exceptions=True)
            wins = [r for r in results if not isinstance(r, BaseException)]
            losses = [r for r in results if isinstance(r, BaseException)]
            assert len(wins) == 1
            assert all(isinstance(r, ConcurrencyError) for r in losses) and len(losses) == writers - 1
            stored, _ = await log.load("job", "a")
            assert len(stored) == events_each + (1 if existing else 0)
            assert len({s.event.worker_id for s in stored if isinstance(s.event, ev.JobAssigned)}) == 1
        finally:
            await nc.close()

    run(scenario())


def test_fold_helper_sanity() -> None:
    now = utcnow()
    state = fold({}, ev.JobSubmitted(job_id="a", kind="train", workload="w", submitted_at=now))
    state = fold(state, ev.JobAssigned(job_id="a", attempt=2, worker_id="w", assigned_at=now))
    assert state == {"a": ("assigned", 2, 0)}
