"""Shared fixtures: a real nats-server from the wheel, per-test topologies, real SQLite and PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from contracts.subjects import Topology
from eventstore.connect import connect
from eventstore.log import JetStreamLog
from eventstore.server import NatsServer, ServerSpec, free_port

POSTGRES_URL = os.environ.get("STOKER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def start_node(base: Path, name: str = "test") -> NatsServer:
    """A single-node nats-server process (not yet healthy)."""
    spec = ServerSpec(store_dir=base / name / "jetstream", port=free_port(), http_port=free_port(), name=name,
                      max_file_store="100TB")
    server = NatsServer(spec)
    server.start_process()
    return server


@pytest_asyncio.fixture(scope="session")
async def nats_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[NatsServer]:
    """One nats-server with JetStream for the session; tests keep apart by their own topology."""
    server = start_node(tmp_path_factory.mktemp("nats"))
    await server.wait_healthy()
    yield server
    server.stop()


@pytest.fixture
def topology() -> Topology:
    """A prefix of this test's own: its own streams, subjects and buckets."""
    return Topology(prefix=f"t{secrets.token_hex(4)}")


@pytest_asyncio.fixture
async def nc(nats_server: NatsServer):
    """A client connection to the session's server."""
    client = await connect(nats_server.url, "stoker-tests")
    yield client
    await client.close()


@pytest_asyncio.fixture
async def event_log(nc, topology: Topology) -> JetStreamLog:
    """An event log with its streams created."""
    log = JetStreamLog(nc, topology)
    await log.ensure_streams()
    return log


async def postgres_available() -> str | None:
    """None when the local PostgreSQL answers, else why not."""
    import asyncpg

    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError) as exc:
        return f"no PostgreSQL at {POSTGRES_URL}: {exc}"
    await conn.close()
    return None


@pytest_asyncio.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path):
    """A read-model store of each kind: SQLite file, and PostgreSQL in a fresh schema (skipped if absent)."""
    if request.param == "sqlite":
        from eventstore.stores.sqlite import SqliteStore

        opened = await SqliteStore.open(tmp_path / "readmodels.sqlite3")
        yield opened
        await opened.close()
        return
    reason = await postgres_available()
    if reason:
        pytest.skip(reason)
    import asyncpg

    from eventstore.stores.postgres import PostgresStore

    schema = f"t{secrets.token_hex(4)}"
    opened = await PostgresStore.open(POSTGRES_URL, schema=schema)
    yield opened
    await opened.close()
    conn = await asyncpg.connect(POSTGRES_URL)
    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    await conn.close()
