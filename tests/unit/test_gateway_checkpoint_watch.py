"""The gateway's watch on the jobs checkpoint (what expires cached job pages): it reads the store only
while the log holds events the checkpoint has not passed, and says when reading fails."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from types import SimpleNamespace

import structlog

from eventstore.projection import ensure_checkpoint_table, write_checkpoint
from eventstore.stores.sqlite import SqliteStore
from gateway.core import Gateway, checkpoint_read_due
from gateway.hub import Hub
from gateway.live import EVENTS

STEPS = 2000  # bound on every wait below (each step is one short sleep)


@contextlib.contextmanager
def all_levels() -> Iterator[None]:
    """Let info lines through, whatever level an earlier test configured logging at in this process."""
    previous = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        yield
    finally:
        structlog.configure(wrapper_class=previous)


class CountingStore(SqliteStore):
    """A real SQLite store that counts its reads, and fails them while `failing`."""

    reads = 0
    failing = False

    async def fetchone(self, sql, *params):
        self.reads += 1
        if self.failing:
            raise sqlite3.OperationalError("disk I/O error")
        return await super().fetchone(sql, *params)


async def opened(tmp_path, seq: int) -> CountingStore:
    store = await CountingStore.open(tmp_path / "readmodels.sqlite3")
    await ensure_checkpoint_table(store)
    await set_checkpoint(store, seq)
    return store


async def set_checkpoint(store: SqliteStore, seq: int) -> None:
    async with store.transaction() as tx:
        await write_checkpoint(tx, "jobs", seq, 2)


def gateway(store: SqliteStore, log_position: int) -> Gateway:
    hub = Hub(SimpleNamespace(topology=None))  # the real hub, never started: the test says what it read
    hub.passed(EVENTS, log_position)
    return Gateway(settings=None, nc=None, log=None, store=store, registry=None, auth=None, hub=hub)


async def until(check) -> None:
    for _ in range(STEPS):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("never came true")


def test_a_read_is_due_when_the_log_is_ahead_or_the_idle_time_is_up() -> None:
    assert checkpoint_read_due(seen=5, log_position=6, since_read=0.0, idle_s=1.0)
    assert not checkpoint_read_due(seen=5, log_position=5, since_read=0.5, idle_s=1.0)
    assert checkpoint_read_due(seen=5, log_position=5, since_read=1.0, idle_s=1.0)


async def test_the_store_is_not_polled_while_nothing_new_is_in_the_log(tmp_path) -> None:
    store = await opened(tmp_path, 5)
    gw = gateway(store, 5)
    watch = asyncio.create_task(gw.watch_checkpoint(period=0.001, idle_s=3600))
    try:
        await until(lambda: gw.jobs_seq == 5)
        for _ in range(50):  # fifty periods with the checkpoint where the log is
            await asyncio.sleep(0.001)
        assert store.reads == 1
        await set_checkpoint(store, 7)
        gw.hub.passed(EVENTS, 7)  # the hub saw new events: the projector will pass them
        await until(lambda: gw.jobs_seq == 7)
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await store.close()


async def test_a_failing_store_is_logged_once_and_its_recovery_too(tmp_path) -> None:
    store = await opened(tmp_path, 3)
    store.failing = True
    gw = gateway(store, 3)
    with all_levels(), structlog.testing.capture_logs() as logs:
        watch = asyncio.create_task(gw.watch_checkpoint(period=0.001, idle_s=0.001))
        try:
            await until(lambda: store.reads >= 5)
            store.failing = False
            await until(lambda: gw.jobs_seq == 3)
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            await store.close()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1 and "disk I/O error" in warnings[0]["error"]
    assert [e["event"] for e in logs if e["log_level"] == "info"] == ["reading the jobs checkpoint again"]
