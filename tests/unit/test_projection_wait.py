"""ProjectionRunner.wait_for: a wait is woken by the runner moving on, even one that starts in the same turn."""

from __future__ import annotations

import asyncio

from eventstore.projection import ProjectionRunner


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
