"""What a read-model store offers projections and readers, whatever the database."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol


class Transaction(Protocol):
    """One database transaction. SQL uses `?` parameters and `{table}` names on every store."""

    async def execute(self, sql: str, *params: Any, key: str | None = None) -> None:
        """Run a write; stores may buffer writes until the next read or the commit.

        `key` names the one row (or row family) the write touches; writes with different keys may be
        reordered among themselves for speed, writes with the same key or no key never are.
        """

    async def fetchone(self, sql: str, *params: Any) -> dict[str, Any] | None:
        """One row or None (pending writes are flushed first)."""

    async def fetchall(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """All rows (pending writes are flushed first)."""


class ReadModelStore(Protocol):
    """A database holding projections' rows and checkpoints."""

    dialect: str

    def transaction(self, tables: Mapping[str, str] | None = None) -> AbstractAsyncContextManager[Transaction]:
        """A write transaction; `tables` maps `{name}` placeholders to real or shadow tables."""

    async def fetchone(self, sql: str, *params: Any) -> dict[str, Any] | None:
        """Read one row outside a transaction."""

    async def fetchall(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Read rows outside a transaction."""

    async def table_exists(self, name: str) -> bool:
        """Whether a table exists."""

    async def close(self) -> None:
        """Release connections."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether an error is the store's own (connection, I/O, lock, resources): trying later may work.

        Anything else raised while applying an event (an integer out of range, a constraint) is about
        that event, and trying again gives the same error.
        """


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, MemoryError)


class IdentityTables(dict):
    """`{jobs}` → `jobs` for any name: the mapping readers use."""

    def __missing__(self, key: str) -> str:
        return key


def to_numbered(sql: str) -> str:
    """`?` parameters → `$1, $2, …` (PostgreSQL); `?` inside quotes is left alone."""
    out, number, quoted = [], 0, False
    for char in sql:
        if char == "'":
            quoted = not quoted
        if char == "?" and not quoted:
            number += 1
            out.append(f"${number}")
        else:
            out.append(char)
    return "".join(out)


Write = tuple[str, tuple[Any, ...], str | None]  # rendered SQL, parameters, the row key it touches


class BufferedTransaction:
    """A Transaction that queues writes, rendered for its dialect, until the next read or the commit.

    Subclasses say how SQL is rendered (`render`: `{table}` names, parameter style) and how queued
    writes and reads run on their connection (`fetchall`, `flush`, with `take_writes` and `plan_writes`).
    """

    render: Callable[[str, tuple[tuple[str, str], ...]], str]

    def __init__(self, tables: Mapping[str, str]) -> None:
        self._tables = tuple(sorted(tables.items()))
        self._writes: list[Write] = []

    def sql(self, statement: str) -> str:
        """A statement rendered for this transaction's tables and dialect."""
        return self.render(statement, self._tables)

    async def execute(self, sql: str, *params: Any, key: str | None = None) -> None:
        """Queue a write (`key`: the row it touches, see Transaction.execute)."""
        self._writes.append((self.sql(sql), params, key))

    def take_writes(self) -> list[Write]:
        """The queued writes, in order; the queue is empty afterwards."""
        writes, self._writes = self._writes, []
        return writes

    async def fetchone(self, sql: str, *params: Any) -> dict[str, Any] | None:
        """One row (queued writes run first)."""
        rows = await self.fetchall(sql, *params)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """All rows (queued writes run first)."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Run queued writes."""
        raise NotImplementedError


def plan_writes(writes: Sequence[Write]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Order buffered writes into executemany groups without changing any row's outcome.

    A write with a row key commutes with writes of other keys, so keyed writes are laid out in
    layers (the first write of every key, then the second, …) and each layer is grouped by statement:
    a batch of 2,000 events becomes a handful of executemany calls instead of thousands of round trips.
    A write without a key is a barrier: everything before it runs first, in that layered order.
    """
    plan: list[tuple[str, list[tuple[Any, ...]]]] = []
    segment: list[Write] = []
    for write in writes:
        if write[2] is None:
            plan.extend(_layered(segment))
            segment = []
            plan.append((write[0], [write[1]]))
        else:
            segment.append(write)
    plan.extend(_layered(segment))
    return plan


def _layered(segment: Sequence[Write]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    depth: dict[str, int] = {}
    layers: list[dict[str, list[tuple[Any, ...]]]] = []
    for sql, params, key in segment:
        level = depth.get(key, 0)  # type: ignore[arg-type]
        depth[key] = level + 1  # type: ignore[index]
        if level == len(layers):
            layers.append({})
        layers[level].setdefault(sql, []).append(params)
    return [(sql, batch) for layer in layers for sql, batch in layer.items()]
