"""What an alert says to the outside: a `Notice` per raised, resolved or still-open alert, and its webhook body. Pure.

Formats: `json` (the notice itself), `slack` (`{"text": …}`, Slack-compatible), `discord` (`{"content": …}`),
`text` (a plain line, e.g. for an ntfy topic URL).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Literal

import msgspec

from contracts import events as ev
from contracts.base import Event
from services.monitor.domain import STALL_RULE, OpenAlert, Reminder

Kind = Literal["raised", "resolved", "reminder"]
Format = Literal["json", "slack", "discord", "text"]


class Notice(msgspec.Struct, frozen=True, kw_only=True):
    """One thing to tell people about an alert."""

    kind: Kind
    alert_id: str
    rule: str
    target: str
    value: float | None = None
    threshold: float | None = None
    message: str = ""
    at: datetime


def notices_of(events: list[Event], opened_before: Mapping[str, OpenAlert]) -> list[Notice]:
    """The notices of appended alert events (`opened_before`: the open alerts before them, by alert id)."""
    out = []
    raised = {e.alert_id: e for e in events if isinstance(e, ev.AlertRaised | ev.JobStalled)}
    for event in events:
        if isinstance(event, ev.AlertRaised):
            out.append(Notice(kind="raised", alert_id=event.alert_id, rule=event.rule, target=event.target,
                              value=event.value, threshold=event.threshold, message=event.message, at=event.raised_at))
        elif isinstance(event, ev.JobStalled):
            out.append(Notice(kind="raised", alert_id=event.alert_id, rule=STALL_RULE, target=event.job_id,
                              threshold=event.stall_after_s, at=event.raised_at,
                              message=f"job {event.job_id}: no progress for {event.stall_after_s:g}s"))
        elif isinstance(event, ev.AlertResolved):
            known = opened_before.get(event.alert_id)
            rule = known.rule if known else getattr(raised.get(event.alert_id), "rule", STALL_RULE)
            target = known.target if known else ""
            out.append(Notice(kind="resolved", alert_id=event.alert_id, rule=rule, target=target, value=event.value,
                              message=f"resolved ({event.reason})", at=event.resolved_at))
    return out


def reminder_notice(reminder: Reminder, now: datetime) -> Notice:
    """The notice of an alert still open after its rule's repeat interval."""
    return Notice(kind="reminder", alert_id=reminder.alert_id, rule=reminder.rule, target=reminder.target,
                  value=reminder.value, message="still open", at=now)


def summary(notice: Notice) -> str:
    """One line a person reads: `[stoker] RAISED cpu_high on box-1: cpu_percent 93.5 > 80`."""
    value = "" if notice.value is None else f" (value {notice.value:g})"
    where = f" on {notice.target}" if notice.target else ""
    return f"[stoker] {notice.kind.upper()} {notice.rule}{where}: {notice.message}{value}"


def webhook_body(notice: Notice, fmt: Format) -> tuple[bytes, str]:
    """The POST body and its content type for one webhook format."""
    if fmt == "json":
        return msgspec.json.encode(notice), "application/json"
    if fmt == "slack":
        return msgspec.json.encode({"text": summary(notice)}), "application/json"
    if fmt == "discord":
        return msgspec.json.encode({"content": summary(notice)[:2000]}), "application/json"
    return summary(notice).encode(), "text/plain; charset=utf-8"


def backoff_s(attempt: int, base_s: float, cap_s: float = 60.0) -> float:
    """How long to wait before retry `attempt` (1, 2, …): doubling from `base_s`, at most `cap_s`."""
    return min(cap_s, base_s * 2 ** (attempt - 1))
