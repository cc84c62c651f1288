"""A read-only SqliteStore writes nothing: no folder, no database, no change of journal mode."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from eventstore.stores import open_store
from eventstore.stores.sqlite import NoReadModel, SqliteStore


async def test_a_readonly_open_of_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "never" / "readmodels.sqlite3"
    with pytest.raises(NoReadModel, match="no read model"):
        await SqliteStore.open(path, readonly=True)
    with pytest.raises(NoReadModel):
        await open_store("", path, readonly=True)
    assert not path.parent.exists()


async def test_a_readonly_open_leaves_an_existing_database_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "readmodels.sqlite3"
    db = sqlite3.connect(path)  # rollback journal, as another tool might have left it
    db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY)")
    db.execute("INSERT INTO jobs VALUES ('j1')")
    db.commit()
    db.close()
    before = path.stat().st_mtime_ns, path.read_bytes()

    store = await SqliteStore.open(path, readonly=True)
    try:
        assert await store.fetchall("SELECT id FROM jobs") == [{"id": "j1"}]
        assert await store.table_exists("jobs")
        with pytest.raises(sqlite3.OperationalError):
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO jobs VALUES ('j2')")
    finally:
        await store.close()

    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        check.close()
    assert os.listdir(tmp_path) == ["readmodels.sqlite3"]  # no -wal or -shm left behind either


async def test_a_readonly_store_reads_what_the_writer_commits(tmp_path: Path) -> None:
    path = tmp_path / "readmodels.sqlite3"
    writer = await SqliteStore.open(path)
    reader = None
    try:
        async with writer.transaction() as tx:
            await tx.execute("CREATE TABLE t (x INTEGER)")
            await tx.execute("INSERT INTO t VALUES (1)")
        reader = await SqliteStore.open(path, readonly=True)
        async with writer.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (2)")
        assert await reader.fetchall("SELECT x FROM t ORDER BY x") == [{"x": 1}, {"x": 2}]
    finally:
        if reader is not None:
            await reader.close()
        await writer.close()
