"""The `alerts` read model: one row per alert (a rule's condition on a host or job, raised until resolved)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contracts import events as ev
from eventstore.log import StoredEvent
from eventstore.readmodels import Handlers, apply_handler, apply_handlers
from eventstore.readmodels.jobs import iso
from eventstore.stores.base import ReadModelStore, Transaction

STALL_RULE = "job_stalled"  # the rule name a JobStalled shows under (services/monitor/domain.py says the same)


class AlertsProjection:
    """alerts(id, rule, target_kind, target, status open|resolved, value, threshold, message, raised_at, …)."""

    name = "alerts"
    version = 1
    tables = ("alerts",)

    def ddl(self, dialect: str) -> list[str]:
        """The alerts table and its index by status and time."""
        real = "DOUBLE PRECISION" if dialect == "postgres" else "REAL"
        return [
            "CREATE TABLE IF NOT EXISTS {alerts} (id TEXT PRIMARY KEY, rule TEXT NOT NULL, target_kind TEXT NOT NULL,"
            f" target TEXT NOT NULL, status TEXT NOT NULL, value {real}, threshold {real} NOT NULL,"
            " message TEXT NOT NULL, raised_at TEXT NOT NULL, resolved_at TEXT, resolved_value"
            f" {real}, reason TEXT, updated_seq BIGINT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {alerts}_status ON {alerts} (status, raised_at)",
        ]

    async def apply(self, stored: StoredEvent, tx: Transaction) -> None:
        """Update the alert's row for one event."""
        await apply_handler(_HANDLERS, stored, tx)

    async def apply_batch(self, events: Sequence[StoredEvent], tx: Transaction) -> None:
        """`apply` on each event in order."""
        await apply_handlers(_HANDLERS, events, tx)


_INSERT = ("INSERT INTO {alerts} (id, rule, target_kind, target, status, value, threshold, message, raised_at,"
           " resolved_at, resolved_value, reason, updated_seq) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, NULL, NULL,"
           " NULL, ?) ON CONFLICT (id) DO NOTHING")


async def _raised(e: ev.AlertRaised, seq: int, tx: Transaction) -> None:
    await tx.execute(_INSERT, e.alert_id, e.rule, e.target_kind, e.target, e.value, e.threshold, e.message,
                     iso(e.raised_at), seq, key=e.alert_id)


async def _stalled(e: ev.JobStalled, seq: int, tx: Transaction) -> None:
    on = f" on {e.worker_id}" if e.worker_id else ""
    message = f"job {e.job_id}{on}: no progress for {e.stall_after_s:g}s"
    await tx.execute(_INSERT, e.alert_id, STALL_RULE, "job", e.job_id, None, e.stall_after_s, message,
                     iso(e.raised_at), seq, key=e.alert_id)


async def _resolved(e: ev.AlertResolved, seq: int, tx: Transaction) -> None:
    await tx.execute("UPDATE {alerts} SET status = 'resolved', resolved_at = ?, resolved_value = ?, reason = ?,"
                     " updated_seq = ? WHERE id = ?", iso(e.resolved_at), e.value, e.reason, seq, e.alert_id,
                     key=e.alert_id)


_HANDLERS: Handlers = {ev.AlertRaised: _raised, ev.JobStalled: _stalled, ev.AlertResolved: _resolved}


async def list_alerts(store: ReadModelStore, *, include_resolved: bool = False,
                      limit: int = 500) -> list[dict[str, Any]]:
    """Alerts newest first: the open ones, or (include_resolved) every one, at most `limit`."""
    where = "" if include_resolved else " WHERE status = 'open'"
    return await store.fetchall(f"SELECT * FROM {{alerts}}{where} ORDER BY raised_at DESC, id DESC LIMIT ?",
                                max(1, min(limit, 10_000)))


async def open_alert_count(store: ReadModelStore) -> int:
    """How many alerts are open."""
    row = await store.fetchone("SELECT COUNT(*) AS n FROM {alerts} WHERE status = 'open'")
    return int(row["n"]) if row else 0


async def open_alerts_by_rule(store: ReadModelStore) -> dict[str, int]:
    """How many alerts are open for each rule."""
    rows = await store.fetchall("SELECT rule, COUNT(*) AS n FROM {alerts} WHERE status = 'open' GROUP BY rule")
    return {r["rule"]: int(r["n"]) for r in rows}
