"""Read-model stores: the same projection SQL on SQLite (default) and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

from eventstore.stores.base import ReadModelStore, Transaction

__all__ = ["ReadModelStore", "Transaction", "open_store"]


async def open_store(database_url: str, sqlite_path: Any, *, readonly: bool = False,
                     schema: str | None = None) -> ReadModelStore:
    """The store a URL names: postgresql://… → PostgreSQL, sqlite:///path or empty → SQLite."""
    if database_url.startswith(("postgresql://", "postgres://")):
        from eventstore.stores.postgres import PostgresStore

        return await PostgresStore.open(database_url, schema=schema)
    from eventstore.stores.sqlite import SqliteStore

    path = re.sub(r"^sqlite:///?", "/", database_url) if database_url.startswith("sqlite:") else sqlite_path
    return await SqliteStore.open(path, readonly=readonly)
