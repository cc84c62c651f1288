"""What a read-model store offers projections and readers, whatever the database."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


class Transaction(Protocol):
    """One database transaction. SQL uses `?` parameters and `{table}` names on every store."""

    async def execute(self, sql: str, *params: Any) -> None:
        """Run a write; stores may buffer writes until the next read or the commit."""

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


def group_runs(writes: Sequence[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Consecutive writes of the same statement, grouped for executemany: [(sql, [params, …]), …]."""
    runs: list[tuple[str, list[tuple[Any, ...]]]] = []
    for sql, params in writes:
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(params)
        else:
            runs.append((sql, [params]))
    return runs


def table_names(sql: str) -> list[str]:
    """The `{placeholder}` table names a statement uses."""
    return _PLACEHOLDER.findall(sql)
