"""Monitor settings: `[monitor]` in stoker.toml, or STOKER_MONITOR_<FIELD> variables.

Rules are a list of tables (`[[monitor.rules]]`, or STOKER_MONITOR_RULES as JSON); giving any replaces
the defaults (`services.monitor.domain.DEFAULT_RULES`). Webhooks are `[[monitor.webhooks]]` tables.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from services.monitor.domain import DEFAULT_RULES, Rule
from services.monitor.webhooks import Webhook

Seconds = Annotated[float, msgspec.Meta(gt=0)]


class MonitorSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How often a machine is sampled, and (on the control plane) the alert rules and stall detection."""

    # sample: publish this machine's samples only (beside a worker); alert: also decide alerts for every
    # host and job (the one holding the lease acts; `stoker up` runs this one)
    role: Literal["sample", "alert"] = "alert"
    host_id: str = ""  # empty: the local worker's id (hostname + data dir), so a host and its worker share it
    interval_s: Seconds = 10.0
    paths: tuple[str, ...] = ()  # more disks to watch (the data dir is always watched)
    missing_after_s: Seconds = 60.0  # a host without samples this long gets a `host_silent` alert
    stall_after_s: Seconds = 600.0  # a running job without progress this long stalls
    tick_s: Seconds = 1.0  # how often silence and stalls are checked
    lease_ttl_s: Seconds = 5.0
    rules: tuple[Rule, ...] = DEFAULT_RULES
    expected_gpus_file: str = ""  # the GPUs `stoker service install` recorded (JSON list): `gpu_missing` counts them
    webhooks: tuple[Webhook, ...] = ()  # `[[monitor.webhooks]]`: url, format (json|slack|discord|text), rules

    def __post_init__(self) -> None:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"rules: names must be distinct, got {names}")
        if {"host_silent", "job_stalled"} & set(names):
            raise ValueError("rules: host_silent and job_stalled are built in (set missing_after_s, stall_after_s)")
