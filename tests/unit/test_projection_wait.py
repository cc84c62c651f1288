"""ProjectionRunner.wait_for is woken by the runner moving on, even in the same turn; read model times sort as time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

from eventstore.projection import ProjectionRunner
from eventstore.readmodels.jobs import iso


async def test_a_wait_that_begins_as_the_runner_moves_on_is_woken() -> None:
    # The wait reads the position and parks; the runner moves on before the wait's inner task has run (the
    # projector finishing its last batch as a test asks whether it is there): the wake-up must not be lost.
    runner = ProjectionRunner(None, None, [])  # type: ignore[arg-type]  # only the position is used here

    async def move_on() -> None:
        runner.advanced(3)

    waiting = asyncio.create_task(runner.wait_for(3, timeout=5.0))
    moving = asyncio.create_task(move_on())  # runs after the wait's first step, before its inner wait
    assert await asyncio.wait_for(waiting, 10.0) is True
    await moving


async def test_a_wait_ends_at_its_timeout_when_the_runner_stays_behind() -> None:
    runner = ProjectionRunner(None, None, [])  # type: ignore[arg-type]
    runner.advanced(2)
    assert await runner.wait_for(2, timeout=0.01) is True
    assert await runner.wait_for(5, timeout=0.05) is False


async def test_every_wait_at_or_below_the_position_is_woken() -> None:
    runner = ProjectionRunner(None, None, [])  # type: ignore[arg-type]
    waits = [asyncio.create_task(runner.wait_for(seq, timeout=5.0)) for seq in (1, 2, 4)]
    await asyncio.sleep(0)
    runner.advanced(2)
    assert await asyncio.wait_for(asyncio.gather(waits[0], waits[1]), 10.0) == [True, True]
    assert not waits[2].done()
    runner.advanced(4)
    assert await asyncio.wait_for(waits[2], 10.0) is True


def test_read_model_timestamps_sort_as_time_does() -> None:
    # Jobs are paged by (submitted_at, id) as text: a whole second must not sort after its fractions.
    whole = datetime(2026, 1, 1, 5, 0, 0, tzinfo=UTC)
    moments = [whole - timedelta(microseconds=1), whole, whole + timedelta(microseconds=500_000),
               datetime(2026, 1, 1, 7, 0, 1, tzinfo=timezone(timedelta(hours=2)))]  # 05:00:01 UTC
    texts = [iso(m) for m in moments]
    assert texts == sorted(texts) and texts[1] == "2026-01-01T05:00:00.000000Z"
    assert [datetime.fromisoformat(t) for t in texts] == moments and iso(None) is None
