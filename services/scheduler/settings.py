"""Scheduler settings: `[scheduler]` in stoker.toml, or STOKER_SCHEDULER_<FIELD> variables."""

from __future__ import annotations

from typing import Annotated

import msgspec

Seconds = Annotated[float, msgspec.Meta(gt=0)]


class SchedulerSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How the scheduler paces itself; the defaults suit a laptop and a small fleet."""

    lease_ttl_s: Seconds = 3.0  # a standby takes over after the leader is silent this long
    tick_s: Seconds = 0.5  # how often timeouts, orphaned attempts and due retries are looked at
    snapshot_every: Annotated[int, msgspec.Meta(ge=1)] = 20_000  # events folded between snapshots
    retry_backoff_s: Seconds = 1.0  # delay before the first retry of a failed job; doubles each retry
    retry_backoff_max_s: Seconds = 60.0
    batch_min_events: Annotated[int, msgspec.Meta(ge=2)] = 16  # this many waiting events go as one batch
    max_in_flight: Annotated[int, msgspec.Meta(ge=1)] = 8  # appends (or batches) on their way at once
    dispatch_retries: Annotated[int, msgspec.Meta(ge=0)] = 5
    command_wait_s: Seconds = 3.0  # how long a command waits for a paused or rebuilding leader
