"""Following the log forever: restart from the last applied position after an error, with a backoff.

The readers that keep something current for the life of a process (the gateway's live fan-out, the
scheduler's board, the gateway's token registry) each hand `follow_forever` a position (the last
sequence they applied) and a function applying one raw message. A consumer that breaks (a lost
connection, a stream leader election, an apply that raised) is logged and started again just
after the position, so nothing is skipped and nothing applied twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from eventstore.observability import get_logger
from eventstore.ports import EventLog, RawMessage

log = get_logger(component="follow")
YIELD_EVERY = 32  # let other tasks run during a burst


async def follow_forever(event_log: EventLog, position: Callable[[], int], apply: Callable[[RawMessage], None], *,
                         name: str, filter_subject: str | None = None, stream: str | None = None,
                         backoff_s: float = 0.5, max_backoff_s: float = 5.0) -> None:
    """Apply every message after `position()` as it comes, forever (cancel to stop).

    After a failure the wait before restarting doubles from `backoff_s` up to `max_backoff_s`, and
    goes back to `backoff_s` once a message was applied.
    """
    failures = 0
    while True:
        try:
            count = 0
            async for msg in event_log.follow_raw(position() + 1, filter_subject=filter_subject, stream=stream):
                apply(msg)
                failures, count = 0, count + 1
                if count % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            reason = "the consumer ended"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = repr(exc)
        delay = min(max_backoff_s, backoff_s * 2 ** failures)
        failures += 1
        log.warning("follower restarting", follower=name, position=position(), error=reason, retry_in_s=delay)
        await asyncio.sleep(delay)


async def wait_for_any(*events: asyncio.Event) -> None:
    """Return once any of `events` is set (stop asked, lease lost, a failure), leaving no waiter behind."""
    waits = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()


async def cancel_and_wait(tasks: list[asyncio.Task], timeout: float = 10.0, retry_s: float = 0.5) -> list[asyncio.Task]:
    """Cancel `tasks` and wait for them to end, cancelling again while they run; returns those still running.

    On Python 3.11 `asyncio.wait_for` (inside nats-py's requests) can swallow a cancellation that
    arrives as its inner future completes, so one `cancel()` may be lost and a plain gather hangs.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = {t for t in tasks if not t.done()}
    while pending and loop.time() < deadline:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=min(retry_s, max(0.0, deadline - loop.time())))
    await asyncio.gather(*(t for t in tasks if t.done()), return_exceptions=True)  # retrieve their exceptions
    if pending:
        log.warning("tasks did not stop", tasks=sorted(t.get_name() for t in pending), timeout_s=timeout)
    return list(pending)
