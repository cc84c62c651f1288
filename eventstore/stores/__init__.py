"""Read-model stores: the same projection SQL on SQLite (default) and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from eventstore.stores.base import ReadModelStore, Transaction

__all__ = ["ReadModelStore", "StoreUnavailable", "Transaction", "open_store", "shown_url"]


class StoreUnavailable(ConnectionError):
    """The read-model database a URL names cannot be reached or refuses us; the message says which and why."""


def shown_url(database_url: str) -> str:
    """A database URL fit for a log line or a terminal: any password replaced by `***`. Pure."""
    parts = urlsplit(database_url)
    if parts.password is None:
        return database_url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def open_store(database_url: str, sqlite_path: Any, *, readonly: bool = False,
                     schema: str | None = None) -> ReadModelStore:
    """The store a URL names: postgresql://… → PostgreSQL, sqlite:///path or empty → SQLite."""
    if database_url.startswith(("postgresql://", "postgres://")):
        import asyncpg

        from eventstore.stores.postgres import PostgresStore

        try:
            return await PostgresStore.open(database_url, schema=schema)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"cannot use the read-model database {shown_url(database_url)}: "
                                   f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}") from exc
    from eventstore.stores.sqlite import SqliteStore

    path = re.sub(r"^sqlite:///?", "/", database_url) if database_url.startswith("sqlite:") else sqlite_path
    return await SqliteStore.open(path, readonly=readonly)
