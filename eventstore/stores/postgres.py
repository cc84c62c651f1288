"""PostgreSQL read models through asyncpg: the same SQL, `?` turned into `$n`, writes pipelined."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import asyncpg

from eventstore.stores.base import TRANSIENT_ERRORS, BufferedTransaction, IdentityTables, plan_writes, to_numbered

_TRANSIENT = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InsufficientResourcesError,
              asyncpg.OperatorInterventionError, asyncpg.TransactionRollbackError, *TRANSIENT_ERRORS)


@lru_cache(maxsize=4096)
def _render(sql: str, tables: tuple[tuple[str, str], ...]) -> str:
    return to_numbered(sql.format_map(IdentityTables(tables)))


class PostgresTransaction(BufferedTransaction):
    """Buffers writes and sends them with executemany before any read and at commit."""

    render = staticmethod(_render)

    def __init__(self, conn: asyncpg.Connection, tables: Mapping[str, str]) -> None:
        super().__init__(tables)
        self._conn = conn

    async def fetchone(self, sql: str, *params: Any) -> dict[str, Any] | None:
        """One row (queued writes run first)."""
        await self.flush()
        row = await self._conn.fetchrow(self.sql(sql), *params)
        return dict(row) if row is not None else None

    async def fetchall(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """All rows (queued writes run first)."""
        await self.flush()
        return [dict(r) for r in await self._conn.fetch(self.sql(sql), *params)]

    async def flush(self) -> None:
        """Run queued writes."""
        for sql, batch in plan_writes(self.take_writes()):
            if len(batch) == 1:
                await self._conn.execute(sql, *batch[0])
            else:
                await self._conn.executemany(sql, batch)


class PostgresStore:
    """Read models in PostgreSQL (optionally in their own schema), through a small pool."""

    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool, schema: str | None) -> None:
        self._pool = pool
        self.schema = schema

    @classmethod
    async def open(cls, dsn: str, *, schema: str | None = None, size: int = 4) -> PostgresStore:
        """Connect; with `schema`, create it and work inside it."""
        settings = {"search_path": schema} if schema else {}
        if schema:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            finally:
                await conn.close()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, server_settings=settings)
        return cls(pool, schema)

    @asynccontextmanager
    async def transaction(self, tables: Mapping[str, str] | None = None) -> AsyncIterator[PostgresTransaction]:
        """A transaction on one pooled connection; rolled back on any error."""
        async with self._pool.acquire() as conn, conn.transaction():
            tx = PostgresTransaction(conn, tables or {})
            yield tx
            await tx.flush()

    async def fetchall(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Rows of a read."""
        return [dict(r) for r in await self._pool.fetch(_render(sql, ()), *params)]

    async def fetchone(self, sql: str, *params: Any) -> dict[str, Any] | None:
        """One row of a read, or None."""
        row = await self._pool.fetchrow(_render(sql, ()), *params)
        return dict(row) if row is not None else None

    async def table_exists(self, name: str) -> bool:
        """Whether a table exists in the store's schema."""
        row = await self.fetchone("SELECT to_regclass(?) IS NOT NULL AS present", name)
        return bool(row and row["present"])

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    def is_transient(self, exc: BaseException) -> bool:
        """A lost connection, a server shutting down, no resources, a deadlock: not the event's fault."""
        return isinstance(exc, _TRANSIENT)
