"""Read-model stores: the same projection SQL on SQLite (default) and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from eventstore.stores.base import ReadModelStore, Transaction

__all__ = ["ReadModelStore", "Transaction", "open_store"]


class _Settings(Protocol):
    database_url: str

    @property
    def sqlite_path(self) -> Any: ...


async def open_store(database_url: str, sqlite_path: Any, *, readonly: bool = False,
                     schema: str | None = None) -> ReadModelStore:
    """The store a URL names: postgresql://… → PostgreSQL, sqlite:///path or empty → SQLite."""
    if database_url.startswith(("postgresql://", "postgres://")):
        from eventstore.stores.postgres import PostgresStore

        return await PostgresStore.open(database_url, schema=schema)
    from eventstore.stores.sqlite import SqliteStore

    path = re.sub(r"^sqlite:///?", "/", database_url) if database_url.startswith("sqlite:") else sqlite_path
    return await SqliteStore.open(path, readonly=readonly)


def render_tables(sql: str, tables: Mapping[str, str]) -> str:
    """Replace `{table}` placeholders with the table names in use (real or shadow)."""
    return sql.format_map(tables)
