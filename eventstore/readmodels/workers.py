"""The `workers` read model: one row per known worker, its state and capabilities; and its queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from nats.aio.client import Client

from contracts import events as ev
from contracts.subjects import Topology
from contracts.telemetry import WorkerHeartbeat
from eventstore.log import StoredEvent
from eventstore.readmodels import Handlers, apply_handler, apply_handlers
from eventstore.readmodels.jobs import as_json, iso
from eventstore.stores.base import ReadModelStore, Transaction
from eventstore.telemetry import last_sample

JSON_COLUMNS = ("addresses", "gpus", "labels")  # stored as JSON text (arrays)


def worker_record(row: dict[str, Any]) -> dict[str, Any]:
    """A workers row as data: its JSON columns decoded to arrays."""
    return {**row, **{c: msgspec.json.decode(row[c]) if row.get(c) else [] for c in JSON_COLUMNS}}


class WorkersProjection:
    """workers(id, status healthy|lost|left, hostname, capabilities, …)."""

    name = "workers"
    version = 2  # 2: worker_workloads (what each worker offers, with its parameter schemas)
    tables = ("workers", "worker_workloads")

    def ddl(self, dialect: str) -> list[str]:
        """The workers table."""
        return [
            "CREATE TABLE IF NOT EXISTS {workers} (id TEXT PRIMARY KEY, status TEXT NOT NULL,"
            " hostname TEXT NOT NULL, addresses TEXT NOT NULL, cpu_cores INTEGER NOT NULL, ram_mb BIGINT NOT NULL,"
            " gpus TEXT NOT NULL, labels TEXT NOT NULL, slots INTEGER NOT NULL, version TEXT NOT NULL,"
            " registered_at TEXT NOT NULL, last_change_at TEXT NOT NULL, lost_at TEXT, updated_seq BIGINT NOT NULL)",
            # One row per registered workload a worker offers; params_schema: its JSON schema, NULL if undeclared.
            "CREATE TABLE IF NOT EXISTS {worker_workloads} (worker_id TEXT NOT NULL, name TEXT NOT NULL,"
            " params_schema TEXT, PRIMARY KEY (worker_id, name))",
        ]

    async def apply(self, stored: StoredEvent, tx: Transaction) -> None:
        """Update the worker's row for one event."""
        await apply_handler(_HANDLERS, stored, tx)

    async def apply_batch(self, events: Sequence[StoredEvent], tx: Transaction) -> None:
        """`apply` on each event in order."""
        await apply_handlers(_HANDLERS, events, tx)


async def _registered(e: ev.WorkerRegistered, seq: int, tx: Transaction) -> None:
    c = e.capabilities
    gpus = [{"index": g.index, "name": g.name, "memory_mb": g.memory_mb} for g in c.gpus]
    at = iso(e.registered_at)
    await tx.execute(
        "INSERT INTO {workers} (id, status, hostname, addresses, cpu_cores, ram_mb, gpus, labels, slots, version,"
        " registered_at, last_change_at, lost_at, updated_seq) VALUES (?, 'healthy', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
        " NULL, ?) ON CONFLICT (id) DO UPDATE SET status = 'healthy', hostname = excluded.hostname,"
        " addresses = excluded.addresses, cpu_cores = excluded.cpu_cores, ram_mb = excluded.ram_mb,"
        " gpus = excluded.gpus, labels = excluded.labels, slots = excluded.slots, version = excluded.version,"
        " last_change_at = excluded.last_change_at, lost_at = NULL, updated_seq = excluded.updated_seq",
        e.worker_id, c.hostname, as_json(list(c.addresses)), c.cpu_cores, c.ram_mb, as_json(gpus),
        as_json(list(c.labels)), c.slots, c.version, at, at, seq, key=e.worker_id)
    await _offers(e, tx)


async def _offers(e: ev.WorkerRegistered, tx: Transaction) -> None:
    """The workloads the worker offers now replace those it offered before."""
    await tx.execute("DELETE FROM {worker_workloads} WHERE worker_id = ?", e.worker_id, key=e.worker_id)
    schemas = e.capabilities.workload_params or {}
    for name in dict.fromkeys(e.capabilities.workloads or ()):
        schema = schemas.get(name)
        await tx.execute("INSERT INTO {worker_workloads} (worker_id, name, params_schema) VALUES (?, ?, ?)",
                         e.worker_id, name, as_json(schema) if schema is not None else None, key=e.worker_id)


async def _lost(e: ev.WorkerLost, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {workers} SET status = 'lost', lost_at = ?, last_change_at = ?, updated_seq = ?"
                     " WHERE id = ?", iso(e.lost_at), iso(e.lost_at), seq, e.worker_id, key=e.worker_id)


async def _returned(e: ev.WorkerReturned, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {workers} SET status = 'healthy', lost_at = NULL, last_change_at = ?,"
                     " updated_seq = ? WHERE id = ?", iso(e.returned_at), seq, e.worker_id, key=e.worker_id)


async def _deregistered(e: ev.WorkerDeregistered, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {workers} SET status = 'left', last_change_at = ?, updated_seq = ? WHERE id = ?",
                     iso(e.deregistered_at), seq, e.worker_id, key=e.worker_id)


async def _forgotten(e: ev.WorkerForgotten, seq: int, tx: Transaction) -> None:
    await tx.execute("DELETE FROM {workers} WHERE id = ?", e.worker_id, key=e.worker_id)
    await tx.execute("DELETE FROM {worker_workloads} WHERE worker_id = ?", e.worker_id, key=e.worker_id)


_HANDLERS: Handlers = {
    ev.WorkerRegistered: _registered, ev.WorkerLost: _lost, ev.WorkerReturned: _returned,
    ev.WorkerDeregistered: _deregistered, ev.WorkerForgotten: _forgotten,
}


async def worker_counts(store: ReadModelStore) -> dict[str, int]:
    """How many workers are in each status (healthy, lost, left)."""
    rows = await store.fetchall("SELECT status, COUNT(*) AS n FROM {workers} GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}


async def list_workers(store: ReadModelStore, worker_id: str | None = None) -> list[dict[str, Any]]:
    """Every worker's record by id (or the one with `worker_id`: a list of one or none)."""
    if worker_id is not None:
        rows = await store.fetchall("SELECT * FROM {workers} WHERE id = ?", worker_id)
    else:
        rows = await store.fetchall("SELECT * FROM {workers} ORDER BY id")
    return [worker_record(r) for r in rows]


async def last_heartbeats(nc: Client, topology: Topology,
                          worker_ids: Sequence[str]) -> dict[str, WorkerHeartbeat | None]:
    """Each worker's newest heartbeat from telemetry (None: none kept)."""
    return {wid: await last_sample(nc, topology, "heartbeat", wid, WorkerHeartbeat) for wid in worker_ids}


async def count_workers_by_status(store: ReadModelStore) -> dict[str, int]:
    """How many workers are healthy, lost and left."""
    rows = await store.fetchall("SELECT status, COUNT(*) AS n FROM {workers} GROUP BY status")
    return {r["status"]: int(r["n"]) for r in rows}


async def offered_workloads(store: ReadModelStore) -> list[dict[str, Any]]:
    """Every workload registered workers offer (until they leave): name, the workers offering it (healthy
    first), how many are healthy, and its parameter schema (a healthy worker's first; None if undeclared)."""
    rows = await store.fetchall(
        "SELECT o.name, o.worker_id, o.params_schema, w.status FROM {worker_workloads} o JOIN {workers} w"
        " ON w.id = o.worker_id WHERE w.status != 'left' ORDER BY o.name, w.status = 'healthy' DESC, o.worker_id")
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = out.setdefault(row["name"], {"name": row["name"], "workers": [], "healthy_workers": 0,
                                             "params_schema": None})
        entry["workers"].append(row["worker_id"])
        entry["healthy_workers"] += row["status"] == "healthy"
        if entry["params_schema"] is None and row["params_schema"]:
            entry["params_schema"] = msgspec.json.decode(row["params_schema"])
    return list(out.values())
