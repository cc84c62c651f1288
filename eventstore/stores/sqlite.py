"""SQLite read models through aiosqlite: WAL mode, one writer, writes flushed in one thread hop."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite

from eventstore.stores.base import TRANSIENT_ERRORS, BufferedTransaction, IdentityTables, Write, plan_writes


@lru_cache(maxsize=4096)
def _render(sql: str, tables: tuple[tuple[str, str], ...]) -> str:
    return sql.format_map(IdentityTables(tables))


class NoReadModel(FileNotFoundError):
    """A read-only open of a database that does not exist (yet): nothing has projected into it."""


def _rows(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


class SqliteTransaction(BufferedTransaction):
    """Buffers writes and runs them, with any read, on the connection's own thread (one hop for both)."""

    render = staticmethod(_render)

    def __init__(self, conn: aiosqlite.Connection, tables: Mapping[str, str]) -> None:
        super().__init__(tables)
        self._conn = conn

    async def fetchall(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """All rows (queued writes run first)."""
        writes = self.take_writes()
        rendered = self.sql(sql)

        def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
            _apply(db, writes)
            return _rows(db.execute(rendered, params))

        return await self._conn._execute(run, self._conn._conn)

    async def flush(self) -> None:
        """Run queued writes."""
        writes = self.take_writes()
        if writes:
            await self._conn._execute(_apply, self._conn._conn, writes)


def _apply(db: sqlite3.Connection, writes: list[Write]) -> None:
    for sql, batch in plan_writes(writes):
        if len(batch) == 1:
            db.execute(sql, batch[0])
        else:
            db.executemany(sql, batch)


class SqliteStore:
    """Read models in one SQLite file; readers in other processes see committed rows (WAL)."""

    dialect = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        # One connection holds one transaction at a time: users of a shared store (a projector and a gateway
        # in one process) take turns rather than nest BEGINs.
        self._tx_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str, *, readonly: bool = False) -> SqliteStore:
        """Open (creating) the database file in WAL mode; `readonly` opens an existing one and writes nothing.

        A read-only open of a missing database raises NoReadModel (and creates neither it nor its folder).
        """
        path = Path(path)
        if readonly:
            return cls(await _open_readonly(path), path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(str(path), isolation_level=None, timeout=30)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA busy_timeout=30000")
        return cls(conn, path)

    @asynccontextmanager
    async def transaction(self, tables: Mapping[str, str] | None = None) -> AsyncIterator[SqliteTransaction]:
        """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any error."""
        async with self._tx_lock:
            tx = SqliteTransaction(self._conn, tables or {})
            await self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield tx
                await tx.flush()
            except BaseException:
                await self._conn.execute("ROLLBACK")
                raise
            await self._conn.execute("COMMIT")

    async def fetchall(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a read."""
        rendered = _render(sql, ())
        return await self._conn._execute(_read, self._conn._conn, rendered, params)

    async def fetchone(self, sql: str, *params: Any) -> dict[str, Any] | None:
        """One row of a read, or None."""
        rows = await self.fetchall(sql, *params)
        return rows[0] if rows else None

    async def table_exists(self, name: str) -> bool:
        """Whether a table exists."""
        row = await self.fetchone("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", name)
        return row is not None

    async def close(self) -> None:
        """Close the connection."""
        await self._conn.close()

    def is_transient(self, exc: BaseException) -> bool:
        """Locked, busy, disk full or I/O (OperationalError), or the OS: not the event's fault."""
        return isinstance(exc, (sqlite3.OperationalError, *TRANSIENT_ERRORS))


def readonly_uri(path: Path) -> str:
    """The URI that opens an existing database read-only (mode=ro: never created, journal mode untouched)."""
    if not path.is_file():
        raise NoReadModel(f"no read model at {path} yet: is `stoker up` running (or has it ever run here)?")
    return f"file:{quote(str(path.resolve()))}?mode=ro"


async def _open_readonly(path: Path) -> aiosqlite.Connection:
    uri = readonly_uri(path)
    try:
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None, timeout=30)
    except sqlite3.OperationalError as exc:
        raise NoReadModel(f"cannot read the read model at {path}: {exc}") from None
    await conn.execute("PRAGMA busy_timeout=30000")
    await conn.execute("PRAGMA query_only=ON")
    return conn


def _read(db: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> list[dict[str, Any]]:
    return _rows(db.execute(sql, params))
