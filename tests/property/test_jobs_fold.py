"""The jobs read model folds a batch's events per job in memory: however the log is cut into batches (one
transaction for all, random batches, one event each), the tables end the same, and `fold_job` (the gateway's
view of a job the projector has not reached) is the row the projection writes."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import events as ev
from eventstore.projection import apply_events, create_tables
from eventstore.readmodels.jobs import JobsProjection, fold_job
from eventstore.records import StoredEvent
from eventstore.stores.sqlite import SqliteStore

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
JOBS = ("J1", "J2", "J3")
WORKERS = ("w1", "w2")
attempts = st.integers(1, 3)
moments = st.integers(0, 10_000).map(lambda ms: T0 + timedelta(milliseconds=ms))


def event_for(job_id: str) -> st.SearchStrategy[ev.Event]:
    """Any event of one job's life, in any order (a real log has an order; the fold must not rely on it)."""
    return st.one_of(
        st.builds(ev.JobSubmitted, job_id=st.just(job_id), kind=st.sampled_from(["train", "eval"]),
                  workload=st.sampled_from(["noop", "2048"]), params=st.dictionaries(st.sampled_from("ab"),
                                                                                     st.integers(0, 9)),
                  labels=st.lists(st.sampled_from(["gpu", "cpu"]), max_size=2).map(tuple),
                  timeout_s=st.none() | st.floats(1, 100), submitted_at=moments),
        st.builds(ev.JobAssigned, job_id=st.just(job_id), attempt=attempts, worker_id=st.sampled_from(WORKERS),
                  assigned_at=moments),
        st.builds(ev.JobStarted, job_id=st.just(job_id), attempt=attempts, worker_id=st.sampled_from(WORKERS),
                  resumed_from=st.none() | st.integers(0, 99), started_at=moments),
        st.builds(ev.JobCheckpointed, job_id=st.just(job_id), attempt=attempts, iteration=st.integers(0, 99),
                  name=st.just(f"{job_id}/1-5"), sha256=st.just("b" * 64), size=st.integers(0, 99),
                  checkpointed_at=moments),
        st.builds(ev.JobCompleted, job_id=st.just(job_id), attempt=attempts,
                  result=st.dictionaries(st.just("score"), st.integers(0, 9)), completed_at=moments),
        st.builds(ev.JobFailed, job_id=st.just(job_id), attempt=attempts, error=st.sampled_from(["boom", "oom"]),
                  failed_at=moments),
        st.builds(ev.JobStopRequested, job_id=st.just(job_id), requested_at=moments),
        st.builds(ev.JobStopped, job_id=st.just(job_id), attempt=attempts, stopped_at=moments),
        st.builds(ev.JobRequeued, job_id=st.just(job_id), attempt=attempts,
                  reason=st.sampled_from(["worker_lost", "retry"]), requeued_at=moments),
        st.builds(ev.JobTimedOut, job_id=st.just(job_id), attempt=attempts, timed_out_at=moments),
    )


logs = st.lists(st.sampled_from(JOBS).flatmap(event_for), max_size=40)


def stored(events: list[ev.Event]) -> list[StoredEvent]:
    return [StoredEvent(seq=seq, subject=f"stoker.events.job.{e.aggregate_id}", aggregate="job",
                        aggregate_id=e.aggregate_id, event=e, event_id=f"e{seq}", schema=e.schema, time=T0,
                        headers={}) for seq, e in enumerate(events, start=1)]


async def tables_after(path: Path, batches: list[list[StoredEvent]]) -> dict[str, list[dict]]:
    """Every table of the jobs read model after applying `batches`, one transaction each."""
    store = await SqliteStore.open(path)
    projection = JobsProjection()
    try:
        async with store.transaction() as tx:
            await create_tables(tx, projection, store.dialect)
        for batch in batches:
            async with store.transaction() as tx:
                await apply_events(projection, batch, tx)
        return {table: await store.fetchall(f"SELECT * FROM {table} ORDER BY 1, 2") for table in projection.tables}
    finally:
        await store.close()


def cut(items: list, points: list[int]) -> list[list]:
    """`items` in consecutive batches, cut where `points` say."""
    edges = sorted({min(p, len(items)) for p in points} | {0, len(items)})
    return [items[a:b] for a, b in pairwise(edges) if b > a]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs, st.lists(st.integers(0, 40), max_size=6))
def test_batches_of_any_size_end_in_the_same_rows(events: list[ev.Event], points: list[int]) -> None:
    log = stored(events)

    async def check() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            together = await tables_after(Path(tmp) / "one.sqlite3", [log])
            assert await tables_after(Path(tmp) / "cut.sqlite3", cut(log, points)) == together
            assert await tables_after(Path(tmp) / "each.sqlite3", [[e] for e in log]) == together
            rows = {row["id"]: row for row in together["jobs"]}
            for job_id in JOBS:
                assert await fold_job([e for e in log if e.aggregate_id == job_id]) == rows.get(job_id)

    asyncio.run(check())


def test_a_second_submission_of_an_id_changes_nothing_even_in_the_same_batch() -> None:
    first = ev.JobSubmitted(job_id="J1", kind="train", workload="noop", submitted_at=T0)
    again = ev.JobSubmitted(job_id="J1", kind="eval", workload="2048", submitted_at=T0 + timedelta(seconds=1))
    log = stored([first, ev.JobAssigned(job_id="J1", attempt=1, worker_id="w1", assigned_at=T0), again])

    async def check() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for batches in ([log], [log[:1], log[1:]]):
                (row,) = (await tables_after(Path(tmp) / f"{len(batches)}.sqlite3", batches))["jobs"]
                assert (row["kind"], row["workload"], row["status"], row["updated_seq"]) == \
                    ("train", "noop", "assigned", 2)

    asyncio.run(check())
